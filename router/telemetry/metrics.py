"""Every metric the router exports, built on one injected CollectorRegistry.

Label values come only from the config (model, key, route and provider names) or from
the fixed enums of labels.py, so a client sending `model: random-123` cannot create a
series.

A series is created when it first has something to say (an attempt with that outcome,
a failover for that reason, a route that left `available`), so the page grows with
what happened, not with routes x outcomes x reasons. Created at startup, because an
alert compares them with zero or needs them as the config's table before any traffic
(deploy/prometheus/rules.yml, README "Metrics"):
- `llm_router_requests_total{model, outcome}` for every configured model and outcome
  (LLMRouterErrorRatioHigh and LLMRouterFailoverRateHigh: `increase()` of a series
  that appears at 1 would miss that first request);
- `llm_router_upstream_attempts_total{outcome="ok"}` for every (model, own route): the
  model <-> route table LLMRouterModelUnavailable joins on;
- `llm_router_route_state{state="available"}` for every route (that alert's zero);
- `llm_router_route_retirement_timestamp_seconds` for every route with a retirement date
  (LLMRouterRouteModelRetiring: telemetry/retirement.py).
The `_created` companions are off for the whole process (`disable_created_metrics` at
import): they doubled the page and no rule or panel reads them.

Route state gauges are not pushed: `/metrics` refreshes them from health before it
renders (handlers/scrape.py), for the routes that have state only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from router.outcomes import BlockReason, FailureClass, Headroom
from router.telemetry.children import FastHistogram, Spawner
from router.telemetry.exposition import Renderer
from router.telemetry.headroom import HeadroomGauges, values_of
from router.telemetry.labels import RequestOutcome, RouteState, route_labels
from router.telemetry.retirement import RetirementGauge
from router.telemetry.route_table import RouteTable
from router.telemetry.series import ModelSeries, RouteSeries
from router.types import DISTRIBUTION, Config, Key, Route

# Process-wide and at import, so every registry (the app's, a test's) renders without
# `_created` series; PROMETHEUS_DISABLE_CREATED_SERIES would depend on the environment.
disable_created_metrics()

# 50 ms to 5 min: LLM calls span first tokens in tens of ms to long generations.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

# 10 ms to 60 s: a wait is bounded by failover.max_wait (15 s by default).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)

# A misconfigured route shows as route_state disabled, not as its key disabled.
DISABLE_REASONS = tuple(reason for reason in BlockReason if reason.takes_key_out)
_ROUTE = ("route", "key", "provider")


@dataclass(slots=True)
class _RouteGauges:
    """The state gauges of one route that has state, and what they last said: a scrape
    touches a gauge only when its value changed."""

    labels: tuple[str, str, str]
    states: dict[RouteState, Any]  # the state series created so far
    state: RouteState = RouteState.AVAILABLE
    available_in: Any = None  # created when the route is first unavailable
    available_in_value: float = 0.0
    # telemetry/headroom.py's series: from the first report, its four numbers
    headroom_values: list[float] | None = None
    headroom_prefixes: tuple[str, ...] | None = None  # set at the first render
    headroom_value: Headroom | None = field(default=None)


# Routes per health snapshot at a scrape: about 1 ms of loop time each, then a yield.
SCRAPE_CHUNK = 64


class Metrics:
    def __init__(self, registry: CollectorRegistry, config: Config) -> None:
        self.registry = registry
        self._route_series: dict[tuple[str, str], RouteSeries] = {}
        self._model_series: dict[str, ModelSeries] = {}
        self._ttft_series: dict[str, Any] = {}
        self._upstream_series: dict[tuple[str, str], Any] = {}
        self._route_gauges: dict[str, _RouteGauges] = {}
        self._key_reason: dict[str, str] = {}  # key -> the reason its series says (1)
        self._model_reason: dict[str, str] = {}  # client model -> the same
        self._model_labels: set[tuple[str, str]] = set()  # every (model, reason) series
        self.routes = RouteTable.of(config, SCRAPE_CHUNK)
        self._dated = _dated(config)
        self._declare_requests(registry)
        self._declare_upstream(registry)
        self._declare_route_state(registry)
        Info("llm_router_build", "Router version.", registry=registry).info({"version": _version()})
        # The route state gauges' children, made cheaply (telemetry/children.py): at
        # startup one per route, and a scrape after an outage changed every route's
        # state makes one or two per route.
        self._state_child = Spawner(self.route_state)
        self._available_in_child = Spawner(self.route_available_in)
        self.renderer = Renderer(registry, self._labelled())
        self._create_series(config)

    def _labelled(self) -> list[Any]:
        """The labelled families, which telemetry/exposition.py renders from its caches."""
        return [
            self.requests, self.in_flight, self.request_seconds, self.attempts,
            self.upstream_seconds, self.failovers, self.fallbacks, self.ttft, self.tokens,
            self.cached_tokens, self.spend, self.route_state, self.route_available_in,
            self.key_disabled, self.model_disabled, self.headroom,
        ]  # fmt: skip

    def _declare_requests(self, r: CollectorRegistry) -> None:
        """Client requests: by outcome, in flight, and how long they took."""
        self.requests = Counter(
            "llm_router_requests", "Client requests by outcome.", ["model", "outcome"], registry=r
        )
        self.in_flight = Gauge(
            "llm_router_requests_in_flight", "Client requests being served.", ["model"], registry=r
        )
        self.request_seconds = Histogram(
            "llm_router_request_duration_seconds",
            "Client request time, every failover included (streams: until the end).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Requests held for a rate limit to lift (failover.max_wait): how many, how long
        # in all. Created with a model's first wait.
        self.waits = Counter(
            "llm_router_waits", "Requests held until capacity returned.", ["model"], registry=r
        )
        self.wait_seconds = Histogram(
            "llm_router_wait_duration_seconds",
            "Time one request was held waiting for capacity, over all its waits.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.waiting = Gauge(
            "llm_router_requests_waiting",
            "Requests held now until capacity returns (failover.max_waiting bounds them).",
            ["model"],
            registry=r,
        )

    def _declare_upstream(self, r: CollectorRegistry) -> None:
        """Upstream attempts, failovers, fallbacks, first tokens, tokens and spend."""
        self.attempts = Counter(
            "llm_router_upstream_attempts",
            "Upstream attempts by outcome class.",
            ["model", *_ROUTE, "outcome"],
            registry=r,
        )
        # Histograms are per model (and provider), not per route: 14 buckets per route
        # were most of the page at 2,000 routes. Per-route trouble shows in the attempt
        # and failover counters.
        self.upstream_seconds = Histogram(
            "llm_router_upstream_duration_seconds",
            "Time of one upstream attempt, to the end of its answer (streams included).",
            ["model", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "llm_router_failovers",
            "Attempts that failed over to another route, by reason.",
            ["model", *_ROUTE, "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "llm_router_fallbacks",
            "Requests that moved on to a fallback model.",
            ["from_model", "to_model"],
            registry=r,
        )
        self.ttft = Histogram(
            "llm_router_time_to_first_token_seconds",
            "Streams: client request start to the first content event sent.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llm_router_tokens",
            "Tokens the provider reported, by direction (input, output).",
            ["model", *_ROUTE, "direction"],
            registry=r,
        )
        self.cached_tokens = Counter(
            "llm_router_cached_tokens",
            "Input tokens (part of llm_router_tokens_total's input) the provider read from "
            "its prompt cache (kind=read) or wrote to it (kind=write).",
            ["model", *_ROUTE, "kind"],
            registry=r,
        )
        self.spend = Counter(
            "llm_router_spend_usd",
            "Cost of served requests in USD: provider usage times the route's price "
            "(cached input at the cache prices).",
            ["model", *_ROUTE],
            registry=r,
        )

    def _declare_route_state(self, r: CollectorRegistry) -> None:
        """Route and key state, refreshed from health at each scrape."""
        self.state_store_degraded = Gauge(
            "llm_router_state_store_degraded",
            "1 while the shared state backend (Redis) is away and this replica serves on "
            "its own copy of the state.",
            registry=r,
        )
        self.route_state = Gauge(
            "llm_router_route_state",
            "1 for the route's current state, 0 for the others it has been in.",
            [*_ROUTE, "state"],
            registry=r,
        )
        self.route_available_in = Gauge(
            "llm_router_route_available_in_seconds",
            "Seconds until the route may be used again (0: available now).",
            list(_ROUTE),
            registry=r,
        )
        self.key_disabled = Gauge(
            "llm_router_key_disabled",
            "1 while the key is out of rotation, by reason.",
            ["key", "provider", "reason"],
            registry=r,
        )
        self.model_disabled = Gauge(
            "llm_router_model_disabled",
            "1 while the client model is out (over its budget): its fallbacks serve its "
            "requests, or they get a 503 that says so.",
            ["model", "reason"],
            registry=r,
        )
        # llm_router_route_headroom_remaining and _limit{route, key, provider, dimension}:
        # numbers on each route's record, not children (telemetry/headroom.py)
        self.headroom = HeadroomGauges(lambda: list(self._route_gauges.values()))
        r.register(self.headroom)
        r.register(RetirementGauge(lambda: self._dated))  # telemetry/retirement.py

    def _create_series(self, config: Config) -> None:
        """Only the series an alert needs before any traffic (the module's docstring)."""
        for name in config.models:
            requests = self.model_series(name).requests
            for outcome in RequestOutcome:
                requests[outcome]  # the lookup creates the series, at 0
        for model in config.models.values():
            for route in model.routes:
                self.route_series(model.name, route).attempts[FailureClass.OK]  # at 0
        available = RouteState.AVAILABLE.value
        for route in config.all_routes():
            self._state_child(*route_labels(route), available).set(1)

    def route_series(self, model: str, route: Route) -> RouteSeries:
        series = self._route_series.get((model, route.id))
        if series is None:
            series = self._route_series[(model, route.id)] = RouteSeries(self, model, route)
        return series

    def upstream_seconds_of(self, model: str, provider: str) -> Any:
        series = self._upstream_series.get((model, provider))
        if series is None:
            series = self._upstream_series[(model, provider)] = self.upstream_seconds.labels(
                model, provider
            )
        return series

    def ttft_series(self, model: str, route: Route) -> Any:
        """Per client model only (`route` is not a label: 14 buckets per route were a
        large part of the page); a stream of `model` may be served by a fallback's route."""
        series = self._ttft_series.get(model)
        if series is None:
            series = self._ttft_series[model] = FastHistogram(self.ttft.labels(model))
        return series

    def model_series(self, model: str) -> ModelSeries:
        """`model` is a configured name or UNKNOWN_MODEL, never a client's free text."""
        series = self._model_series.get(model)
        if series is None:
            series = self._model_series[model] = ModelSeries(self, model)
        return series

    def observe_route(
        self,
        route: Route,
        state: RouteState,
        available_in: float,
        headroom: Headroom | None,
    ) -> int:
        """Set the route's state gauges, creating each when it first has a value to say
        (a state other than available, a wait, a headroom report); unchanged values are
        left alone. Returns how many series it created (0 to 6), for the scrape to yield
        the loop after a bounded number (handlers/scrape.py)."""
        created = 0
        gauges = self._route_gauges.get(route.id)
        if gauges is None:
            labels = route_labels(route)
            available = self._state_child(*labels, RouteState.AVAILABLE.value)  # startup's
            gauges = self._route_gauges[route.id] = _RouteGauges(
                labels, {RouteState.AVAILABLE: available}
            )
        if state is not gauges.state:
            now = gauges.states.get(state)
            if now is None:
                now = gauges.states[state] = self._state_child(*gauges.labels, state.value)
                created += 1
            gauges.states[gauges.state].set(0)
            now.set(1)
            gauges.state = state
        if available_in != gauges.available_in_value or (
            available_in and gauges.available_in is None
        ):
            if gauges.available_in is None:
                gauges.available_in = self._available_in_child(*gauges.labels)
                created += 1
            gauges.available_in.set(available_in)
            gauges.available_in_value = available_in
        if headroom is not None and gauges.headroom_values is None:
            created += 4
        if (headroom is not None or gauges.headroom_values is not None) and (
            headroom != gauges.headroom_value
        ):
            gauges.headroom_values = values_of(headroom or Headroom())
            gauges.headroom_value = headroom
        return created

    def observe_key(self, name: str, provider: str, reason: str | None) -> None:
        """`reason`: why the key is out of rotation now, None while it is in. A reason's
        series is created when the key is first out for it, and kept (0) after."""
        before = self._key_reason.get(name)
        if reason == before:
            return
        if before is not None:
            self.key_disabled.labels(name, provider, before).set(0)
        if reason is None:
            del self._key_reason[name]
            return
        self.key_disabled.labels(name, provider, reason).set(1)
        self._key_reason[name] = reason

    def observe_model(self, name: str, reason: str | None) -> None:
        """As observe_key, for a client model's own block (budgets.py)."""
        before = self._model_reason.get(name)
        if reason == before:
            return
        if before is not None:
            self.model_disabled.labels(name, before).set(0)
        if reason is None:
            del self._model_reason[name]
            return
        self.model_disabled.labels(name, reason).set(1)
        self._model_reason[name] = reason
        self._model_labels.add((name, reason))

    def reported_models(self) -> Iterable[str]:
        """The models whose series say they are out: a scrape reads them again."""
        return tuple(self._model_reason)

    def reconfigure(
        self, config: Config, removed: Iterable[Route], removed_keys: Iterable[Key]
    ) -> None:
        """After a reload: the startup series of `config` exist (at zero for new routes
        and models), the scrape's route table is the new config's, and the state gauges
        of removed routes and keys are gone, so no alert reads a route that is no longer
        there as stuck. Counters keep their history."""
        self._create_series(config)
        self.routes = RouteTable.of(config, SCRAPE_CHUNK)
        self._dated = _dated(config)
        for route in removed:
            self._route_gauges.pop(route.id, None)
            labels = route_labels(route)
            for each in RouteState:
                _drop(self.route_state, *labels, each.value)
            _drop(self.route_available_in, *labels)  # its headroom goes with its record
        for key in removed_keys:
            self._key_reason.pop(key.name, None)
            for reason in DISABLE_REASONS:
                _drop(self.key_disabled, key.name, key.provider, reason)
        for labels in [labels for labels in self._model_labels if labels[0] not in config.models]:
            self._model_labels.discard(labels)
            self._model_reason.pop(labels[0], None)
            _drop(self.model_disabled, *labels)


def _dated(config: Config) -> tuple[Route, ...]:
    """The routes whose upstream model has a retirement date: the retirement gauge's."""
    return tuple(route for route in config.all_routes() if route.retires is not None)


def _drop(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never observed
        gauge.remove(*labels)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"
