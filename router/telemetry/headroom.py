"""The routes' headroom gauges, kept as plain numbers on each route's record rather than
as prometheus_client children.

Four series per route (remaining and limit, for requests and tokens), created with the
route's first headroom report: at 2,000 routes the first scrape after every route has
reported made 8,000 children at once, each five objects the cyclic GC tracks. Those
40,000 survivors filled the young generation (20,000, server.tune_garbage_collector)
twice, and each collection held the loop 10-30 ms in that scrape. Here a route's four
values live in one list on its record (`Row`), and its line prefixes are plain strings
(which the GC does not track), made at its first render.

`HeadroomGauges` is a collector over those records: the registry, `generate_latest` and
`get_sample_value` read it through `collect()`, and the page's renderer
(telemetry/exposition.py) through `parts()`, a few hundred series at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from router.telemetry.exposition import escape

REMAINING = "llm_router_route_headroom_remaining"
LIMIT = "llm_router_route_headroom_limit"
_HELP = {
    REMAINING: "Rate-limit headroom the provider last reported (NaN: unknown).",
    LIMIT: "Rate limit the provider last reported (NaN: unknown).",
}
LABELS = ("route", "key", "provider", "dimension")
# values[i] of a row: remaining requests, limit requests, remaining tokens, limit tokens
_OF_FAMILY = {REMAINING: ((0, "requests"), (2, "tokens")), LIMIT: ((1, "requests"), (3, "tokens"))}


class Row(Protocol):
    """What a route's record (telemetry/metrics.py) holds for its headroom series."""

    labels: tuple[str, str, str]  # route, key, provider
    headroom_values: list[float] | None  # None until the route's first report
    headroom_prefixes: tuple[str, ...] | None  # the rendered lines' starts, cached


class HeadroomGauges:
    """The two headroom families, read from `rows()` (the routes' records) when
    collected or rendered."""

    def __init__(self, rows: Callable[[], Iterable[Row]]) -> None:
        self._rows = rows

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, _HELP[name], labels=LABELS) for name in _HELP]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = [row for row in self._rows() if row.headroom_values is not None]
        for name, samples in _OF_FAMILY.items():
            family = GaugeMetricFamily(name, _HELP[name], labels=LABELS)
            for row in rows:
                values = row.headroom_values
                assert values is not None
                for index, dimension in samples:
                    family.add_metric([*row.labels, dimension], values[index])
            yield family

    def parts(self, out: list[str], series: int) -> Iterator[bool]:
        """Append the page's lines for both families to `out`; True after each `series`
        series (the caller may hand `out` on and yield the loop)."""
        rows = [row for row in self._rows() if row.headroom_values is not None]
        count = 0
        for family, (name, samples) in enumerate(_OF_FAMILY.items()):
            out.append(f"# HELP {name} {_HELP[name]}\n# TYPE {name} gauge\n")
            for row in rows:
                values = row.headroom_values
                prefixes = row.headroom_prefixes
                if prefixes is None:
                    prefixes = row.headroom_prefixes = _prefixes(row.labels)
                assert values is not None
                for slot, (index, _) in enumerate(samples):
                    value = floatToGoString(values[index])
                    out.append(f"{prefixes[family * 2 + slot]}{value}\n")
                count += 2
                if count >= series:
                    count = 0
                    yield True


def _prefixes(labels: tuple[str, str, str]) -> tuple[str, ...]:
    """remaining requests, remaining tokens, limit requests, limit tokens"""
    route, key, provider = (escape(value) for value in labels)
    return tuple(
        f'{name}{{dimension="{dimension}",key="{key}",provider="{provider}",route="{route}"}} '
        for name, samples in _OF_FAMILY.items()
        for _, dimension in samples
    )


def values_of(room: Any) -> list[float]:
    """A Headroom's four numbers, in a row's order (NaN: not reported)."""
    return [_or_nan(room.remaining_requests), _or_nan(room.limit_requests),
            _or_nan(room.remaining_tokens), _or_nan(room.limit_tokens)]  # fmt: skip


def _or_nan(value: int | None) -> float:
    return math.nan if value is None else float(value)
