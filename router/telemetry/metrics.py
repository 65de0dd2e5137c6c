"""Every metric the router exports, built on one injected CollectorRegistry.

Label values come only from the config (model, key, route and provider names) or from
the fixed enums below, so a client sending `model: random-123` cannot create a series.
Every series a config can produce is created at startup (at zero), so dashboards and
alert rules never point at a series that does not exist yet.

Route state gauges are not pushed: they are refreshed from the health snapshot when
`/metrics` is scraped (`observe_routes`), so they are exact at every scrape.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from router.rules.failures import ACTIONS
from router.types import BlockReason, Config, FailureClass, Headroom, Key, Route

UNKNOWN_MODEL = "_unknown"  # the label for requests naming no configured model
# 50 ms to 5 min: LLM calls span first tokens in tens of ms to long generations.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class RequestOutcome(StrEnum):
    SERVED = "served"
    SERVED_AFTER_FAILOVER = "served_after_failover"
    SERVED_BY_FALLBACK = "served_by_fallback"
    REJECTED = "rejected"  # 4xx: the request's own fault (ours or the provider's verdict)
    EXHAUSTED = "exhausted"  # 429: every route rate limited
    FAILED = "failed"  # 5xx: routes down, deadline passed, internal error
    CANCELLED = "cancelled"  # the client went away first


class AttemptOutcome(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    AUTH = "auth"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    LOCAL_RESOURCE = "local_resource"
    BAD_REQUEST = "bad_request"


class RouteState(StrEnum):
    AVAILABLE = "available"
    COOLING_DOWN = "cooling_down"  # rate limited: a 429's cooldown or spent headroom
    CIRCUIT_OPEN = "circuit_open"
    HALF_OPEN = "half_open"  # the circuit lets one probe through
    DISABLED = "disabled"  # the key is out (quota, auth) or the route is misconfigured


ATTEMPT_OUTCOME: Mapping[FailureClass, AttemptOutcome] = {
    FailureClass.OK: AttemptOutcome.OK,
    FailureClass.RATE_LIMITED: AttemptOutcome.RATE_LIMITED,
    FailureClass.EXCEEDS_TPM: AttemptOutcome.RATE_LIMITED,
    FailureClass.QUOTA: AttemptOutcome.QUOTA,
    FailureClass.AUTH: AttemptOutcome.AUTH,
    FailureClass.OVERLOADED: AttemptOutcome.SERVER_ERROR,
    FailureClass.SERVER_ERROR: AttemptOutcome.SERVER_ERROR,
    FailureClass.MODEL_NOT_FOUND: AttemptOutcome.SERVER_ERROR,
    FailureClass.REDIRECT: AttemptOutcome.SERVER_ERROR,
    FailureClass.TIMEOUT: AttemptOutcome.TIMEOUT,
    FailureClass.CONNECTION: AttemptOutcome.CONNECTION,
    FailureClass.LOCAL_RESOURCE: AttemptOutcome.LOCAL_RESOURCE,
    FailureClass.CONTEXT_TOO_LONG: AttemptOutcome.BAD_REQUEST,
    FailureClass.CONTENT_POLICY: AttemptOutcome.BAD_REQUEST,
    FailureClass.BAD_REQUEST: AttemptOutcome.BAD_REQUEST,
    FailureClass.UNKNOWN: AttemptOutcome.BAD_REQUEST,
}
# A misconfigured route shows as route_state disabled, not as its key disabled.
DISABLE_REASONS = tuple(reason for reason in BlockReason if reason.takes_key_out)
_ROUTE = ("route", "key", "provider")


def route_labels(route: Route) -> tuple[str, str, str]:
    return route.id, route.key.name, route.key.provider


@dataclass(slots=True)
class RouteSeries:
    """One (client model, route)'s series, resolved once: `labels()` takes a lock and
    builds a key on every call, which adds up on the request path. Only pairs where the
    route is one of the model's own (attempts record the model whose route served)."""

    attempts: dict[FailureClass, Any]
    failovers: dict[FailureClass, Any]
    upstream_seconds: Any
    tokens_in: Any
    tokens_out: Any
    spend: Any


@dataclass(slots=True)
class ModelSeries:
    requests: dict[RequestOutcome, Any]
    seconds: Any
    in_flight: Any


class Metrics:
    def __init__(self, registry: CollectorRegistry, config: Config) -> None:
        self.registry = registry
        self._route_series: dict[tuple[str, str], RouteSeries] = {}
        self._model_series: dict[str, ModelSeries] = {}
        self._ttft_series: dict[tuple[str, str], Any] = {}
        self._declare_requests(registry)
        self._declare_upstream(registry)
        self._declare_route_state(registry)
        Info("llm_router_build", "Router version.", registry=registry).info({"version": _version()})
        self._create_series(config)

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

    def _declare_upstream(self, r: CollectorRegistry) -> None:
        """Upstream attempts, failovers, fallbacks, first tokens, tokens and spend."""
        self.attempts = Counter(
            "llm_router_upstream_attempts",
            "Upstream attempts by outcome class.",
            ["model", *_ROUTE, "outcome"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "llm_router_upstream_duration_seconds",
            "Time of one upstream attempt, to the end of its answer (streams included).",
            list(_ROUTE),
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
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llm_router_tokens",
            "Tokens the provider reported, by direction (input, output).",
            ["model", *_ROUTE, "direction"],
            registry=r,
        )
        self.spend = Counter(
            "llm_router_spend_usd",
            "Cost of served requests in USD: provider usage times the route's price.",
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
            "1 for the route's current state, 0 for the others.",
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
        self.headroom_remaining = Gauge(
            "llm_router_route_headroom_remaining",
            "Rate-limit headroom the provider last reported (NaN: unknown).",
            [*_ROUTE, "dimension"],
            registry=r,
        )
        self.headroom_limit = Gauge(
            "llm_router_route_headroom_limit",
            "Rate limit the provider last reported (NaN: unknown).",
            [*_ROUTE, "dimension"],
            registry=r,
        )

    def _create_series(self, config: Config) -> None:
        for name in (*config.models, UNKNOWN_MODEL):
            for outcome in RequestOutcome:
                self.requests.labels(name, outcome.value)
        for model in config.models.values():
            self.in_flight.labels(model.name)
            self.request_seconds.labels(model.name)
            for later in model.chain:  # a fallback's routes may serve this model's streams
                for route in config.models[later].routes:
                    self.ttft.labels(model.name, route.id)
            for route in model.routes:
                labels = route_labels(route)
                for outcome in AttemptOutcome:
                    self.attempts.labels(model.name, *labels, outcome.value)
                for failure in FailureClass:
                    if ACTIONS[failure].fails_over:
                        self.failovers.labels(model.name, *labels, failure.value)
                for direction in ("input", "output"):
                    self.tokens.labels(model.name, *labels, direction)
                self.spend.labels(model.name, *labels)
            for later in model.chain[1:]:
                self.fallbacks.labels(model.name, later)
        for route in config.all_routes():
            labels = route_labels(route)
            self.upstream_seconds.labels(*labels)
            self.route_available_in.labels(*labels)
            for dimension in ("requests", "tokens"):
                self.headroom_remaining.labels(*labels, dimension).set(math.nan)
                self.headroom_limit.labels(*labels, dimension).set(math.nan)
        for key in config.keys.values():
            for reason in DISABLE_REASONS:
                self.key_disabled.labels(key.name, key.provider, reason)

    def route_series(self, model: str, route: Route) -> RouteSeries:
        series = self._route_series.get((model, route.id))
        if series is None:
            labels = route_labels(route)
            series = self._route_series[(model, route.id)] = RouteSeries(
                attempts={
                    f: self.attempts.labels(model, *labels, o.value)
                    for f, o in ATTEMPT_OUTCOME.items()
                },
                failovers={
                    f: self.failovers.labels(model, *labels, f.value)
                    for f in FailureClass
                    if ACTIONS[f].fails_over
                },
                upstream_seconds=self.upstream_seconds.labels(*labels),
                tokens_in=self.tokens.labels(model, *labels, "input"),
                tokens_out=self.tokens.labels(model, *labels, "output"),
                spend=self.spend.labels(model, *labels),
            )
        return series

    def ttft_series(self, model: str, route: Route) -> Any:
        """Kept apart from route_series: a stream of `model` may be served by a fallback's
        route, and that pair must not create attempt series (the alert rules read those
        as the table of each model's own routes)."""
        series = self._ttft_series.get((model, route.id))
        if series is None:
            series = self._ttft_series[(model, route.id)] = self.ttft.labels(model, route.id)
        return series

    def model_series(self, model: str) -> ModelSeries:
        """`model` is a configured name or UNKNOWN_MODEL, never a client's free text."""
        series = self._model_series.get(model)
        if series is None:
            series = self._model_series[model] = ModelSeries(
                requests={o: self.requests.labels(model, o.value) for o in RequestOutcome},
                seconds=self.request_seconds.labels(model),
                in_flight=self.in_flight.labels(model),
            )
        return series

    def observe_route(
        self,
        route: Route,
        state: RouteState,
        available_in: float,
        headroom: Headroom | None,
    ) -> None:
        labels = route_labels(route)
        for each in RouteState:
            self.route_state.labels(*labels, each.value).set(1 if each is state else 0)
        self.route_available_in.labels(*labels).set(available_in)
        room = headroom or Headroom()
        for dimension, remaining, limit in (
            ("requests", room.remaining_requests, room.limit_requests),
            ("tokens", room.remaining_tokens, room.limit_tokens),
        ):
            self.headroom_remaining.labels(*labels, dimension).set(_or_nan(remaining))
            self.headroom_limit.labels(*labels, dimension).set(_or_nan(limit))

    def observe_keys(self, disabled: Mapping[str, str], keys: Iterable[tuple[str, str]]) -> None:
        """`disabled`: key name -> reason for each key out of rotation now."""
        for name, provider in keys:
            reason_now = disabled.get(name)
            for reason in DISABLE_REASONS:
                self.key_disabled.labels(name, provider, reason).set(
                    1 if reason == reason_now else 0
                )

    def reconfigure(
        self, config: Config, removed: Iterable[Route], removed_keys: Iterable[Key]
    ) -> None:
        """After a reload: the series of `config` exist (at zero for new routes and
        models), and the state gauges of removed routes and keys are gone, so no alert
        reads a route that is no longer there as stuck. Counters keep their history."""
        self._create_series(config)
        for route in removed:
            labels = route_labels(route)
            for each in RouteState:
                _drop(self.route_state, *labels, each.value)
            _drop(self.route_available_in, *labels)
            for dimension in ("requests", "tokens"):
                _drop(self.headroom_remaining, *labels, dimension)
                _drop(self.headroom_limit, *labels, dimension)
        for key in removed_keys:
            for reason in DISABLE_REASONS:
                _drop(self.key_disabled, key.name, key.provider, reason)


def _drop(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never observed
        gauge.remove(*labels)


def _or_nan(value: int | None) -> float:
    return math.nan if value is None else float(value)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-router")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"
