"""`llm_router_model_route{model, route, key}`: 1 for each configured model and each of
its own routes, in the config now. The table LLMRouterModelUnavailable joins route state
with (deploy/prometheus/rules.yml): route state has no model label, since one route may
serve several models.

A collector over the current config, as retirement.py's: the pairs come and go with it.
The alert read the pairs from a counter's label sets before, which keep every pair of
every config since the start: after a reload moved a route from one model to another,
the first model still counted the route as its own, and did not alert while the route
was up for the second; a model renamed away alerted when its old route went down.

Its page text never changes between reloads, so it is written once per config, in parts
the scrape yields the loop between (`parts`, as exposition.py's own collectors): 2,000
lines in one piece held the loop for 7 ms.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from router.telemetry.exposition import PART_SERIES, escape
from router.types import Config

NAME = "llm_router_model_route"
_HELP = "1 for each configured model and each of its own routes (the config's route table)."
_LABELS = ("model", "route", "key")
_HEADER = f"# HELP {NAME} {_HELP}\n# TYPE {NAME} gauge\n"


class ModelRoutes:
    def __init__(self, config: Config) -> None:
        self._pairs: tuple[tuple[str, str, str], ...] = ()
        self._text: tuple[str, ...] = ()
        self.set(config)

    def set(self, config: Config) -> None:
        """The table of `config` (at start, and at each reload)."""
        pairs = tuple(
            (model.name, route.id, route.key.name)
            for model in config.models.values()
            for route in model.routes
        )
        # Labels in name order, as prometheus_client writes them: key, model, route.
        lines = [
            f'{NAME}{{key="{escape(key)}",model="{escape(model)}",route="{escape(route)}"}} 1.0\n'
            for model, route, key in pairs
        ]
        self._text = tuple(
            "".join(lines[i : i + PART_SERIES]) for i in range(0, len(lines), PART_SERIES)
        )
        self._pairs = pairs

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, _HELP, labels=_LABELS)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, _HELP, labels=_LABELS)
        for pair in self._pairs:
            family.add_metric(pair, 1.0)
        yield family

    def parts(self, out: list[str], series: int) -> Iterator[bool]:
        """Append the page's lines to `out`; True after each part (`PART_SERIES` lines:
        written once per config, so `series` does not cut them finer)."""
        out.append(_HEADER)
        for part in self._text:
            out.append(part)
            yield True
