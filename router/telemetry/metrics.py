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
- `llm_router_model_route` for every (model, own route) of the config now: the model <->
  route table LLMRouterModelUnavailable joins on (telemetry/model_routes.py);
- `llm_router_route_state{state="available"}` for every route (that alert's zero);
- `llm_router_route_retirement_timestamp_seconds` for every route with a retirement date
  (LLMRouterRouteModelRetiring: telemetry/retirement.py).
The `_created` companions are off for the whole process (`disable_created_metrics` at
import): they doubled the page and no rule or panel reads them.

The route, key and model state gauges are telemetry/state_gauges.py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from router.telemetry.children import FastHistogram
from router.telemetry.exposition import Renderer
from router.telemetry.labels import RequestOutcome
from router.telemetry.log_sink import DroppedLinesCounter
from router.telemetry.logs import dropped_lines
from router.telemetry.model_routes import ModelRoutes
from router.telemetry.retirement import RetirementGauge
from router.telemetry.route_table import RouteTable
from router.telemetry.series import ModelSeries, RouteSeries
from router.telemetry.state_gauges import StateGauges
from router.types import DISTRIBUTION, Config, Key, Route

# Process-wide and at import, so every registry (the app's, a test's) renders without
# `_created` series; PROMETHEUS_DISABLE_CREATED_SERIES would depend on the environment.
disable_created_metrics()

# 50 ms to 5 min: LLM calls span first tokens in tens of ms to long generations.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

# 10 ms to 60 s: a wait is bounded by failover.max_wait (15 s by default).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)

_ROUTE = ("route", "key", "provider")


# Routes per health snapshot at a scrape: about 1 ms of loop time each, then a yield.
SCRAPE_CHUNK = 64


class Metrics:
    def __init__(self, registry: CollectorRegistry, config: Config) -> None:
        self.registry = registry
        self._route_series: dict[tuple[str, str, str], RouteSeries] = {}
        self._model_series: dict[str, ModelSeries] = {}
        self._ttft_series: dict[str, Any] = {}
        self._upstream_series: dict[tuple[str, str], Any] = {}
        self.routes = RouteTable.of(config, SCRAPE_CHUNK)
        self._dated = _dated(config)
        self.model_routes = ModelRoutes(config)  # telemetry/model_routes.py
        self._declare_requests(registry)
        self._declare_upstream(registry)
        self._declare_route_state(registry)
        Info("llm_router_build", "Router version.", registry=registry).info({"version": _version()})
        registry.register(DroppedLinesCounter(dropped_lines))  # telemetry/log_sink.py
        self.renderer = Renderer(registry, self._labelled())
        self._create_series(config)

    def _labelled(self) -> list[Any]:
        """The labelled families, which telemetry/exposition.py renders from its caches."""
        return [
            self.requests, self.in_flight, self.request_seconds, self.attempts,
            self.upstream_seconds, self.failovers, self.fallbacks, self.ttft, self.tokens,
            self.cached_tokens, self.spend, *self.state.labelled(), self.model_routes,
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
        """Route, key and model state (telemetry/state_gauges.py), and retirement dates."""
        self.state = StateGauges(r)
        r.register(RetirementGauge(lambda: self._dated))  # telemetry/retirement.py
        r.register(self.model_routes)

    def _create_series(self, config: Config) -> None:
        """Only the series an alert needs before any traffic (the module's docstring)."""
        for name in config.models:
            requests = self.model_series(name).requests
            for outcome in RequestOutcome:
                requests[outcome]  # the lookup creates the series, at 0
        self.state.available(config.all_routes())

    def route_series(self, model: str, route: Route) -> RouteSeries:
        # By provider too: a key moved to another provider by a reload counts under it
        # (its requests begun before the reload, under the old one).
        at = (model, route.id, route.key.provider)
        series = self._route_series.get(at)
        if series is None:
            series = self._route_series[at] = RouteSeries(self, model, route)
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

    def reconfigure(self, config: Config, gone: Iterable[Route], gone_keys: Iterable[Key]) -> None:
        """After a reload: the state gauges of routes and keys `gone` (removed, or on
        another account, whose state went with it) are gone, so no alert reads a route
        that is no longer there, or a key replaced, as stuck; then the startup series of
        `config` exist (at zero for new routes and models: an account-changed route is
        available again), and the scrape's route table is the new config's. Counters
        keep their history."""
        self.state.forget(gone, gone_keys, config.models)
        self._create_series(config)
        self.routes = RouteTable.of(config, SCRAPE_CHUNK)
        self._dated = _dated(config)
        self.model_routes.set(config)


def _dated(config: Config) -> tuple[Route, ...]:
    """The routes whose upstream model has a retirement date: the retirement gauge's."""
    return tuple(route for route in config.all_routes() if route.retires is not None)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"
