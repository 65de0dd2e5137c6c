"""`llm_router_route_retirement_timestamp_seconds`: when the provider retires each
route's upstream model, for the routes litellm's model data gives a date
(config/retirements.py), as a Unix time (the date's midnight, UTC). An alert reads it
(LLMRouterRouteModelRetiring, deploy/prometheus/rules.yml) days before the provider
starts answering 404.

A collector over the current config's dated routes, not children kept per route: the
series come and go with the config (a reload that moves a route off the model drops
it), and only routes with a date have one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from functools import cache

from prometheus_client.core import GaugeMetricFamily

from router.telemetry.labels import route_labels
from router.types import Route

NAME = "llm_router_route_retirement_timestamp_seconds"
_HELP = (
    "Unix time the provider retires the route's upstream model (litellm's model data); "
    "only routes whose model has a date."
)


class RetirementGauge:
    def __init__(self, routes: Callable[[], Iterable[Route]]) -> None:
        self._routes = routes  # the current config's routes with a date

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, _HELP, labels=("route", "key", "provider"))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, _HELP, labels=("route", "key", "provider"))
        for route in self._routes():
            if route.retires is not None:
                family.add_metric(route_labels(route), timestamp(route.retires))
        yield family


@cache
def timestamp(date: str) -> float:
    """The Unix time of `date` (YYYY-MM-DD) at midnight, UTC."""
    day = datetime.date.fromisoformat(date)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()
