"""The state gauges: each route's state, how long until it is available, its last
headroom report; each key's and client model's reason for being out; the shared state
backend's health. Not pushed: `/metrics` refreshes them from health before it renders
(handlers/scrape.py), for the routes that have state only.

A series is created when it first has a value to say (a state other than available, a
wait, a headroom report, a reason), but for `llm_router_route_state{state="available"}`,
made for every route at start (`available`): LLMRouterModelUnavailable's zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from router.outcomes import BlockReason, Headroom
from router.telemetry.children import Spawner
from router.telemetry.headroom import HeadroomGauges, values_of
from router.telemetry.labels import RouteState, route_labels
from router.types import Key, Route

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


class StateGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._route_gauges: dict[str, _RouteGauges] = {}
        self._key_reason: dict[str, str] = {}  # key -> the reason its series says (1)
        self._model_reason: dict[str, str] = {}  # client model -> the same
        self._model_labels: set[tuple[str, str]] = set()  # every (model, reason) series
        self._declare(registry)
        # The route state gauges' children, made cheaply (telemetry/children.py): at
        # startup one per route, and a scrape after an outage changed every route's
        # state makes one or two per route.
        self._state_child = Spawner(self.route_state)
        self._available_in_child = Spawner(self.route_available_in)

    def labelled(self) -> list[Any]:
        """The labelled families, for telemetry/exposition.py."""
        return [self.route_state, self.route_available_in, self.key_disabled,
                self.model_disabled, self.headroom]  # fmt: skip

    def _declare(self, r: CollectorRegistry) -> None:
        """Route and key state, refreshed from health at each scrape."""
        self.state_store_degraded = Gauge(
            "llm_router_state_store_degraded",
            "1 while the shared state backend (Redis) is away and this replica serves on "
            "its own copy of the state, or while its state snapshot cannot be written.",
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

    def available(self, routes: Iterable[Route]) -> None:
        """`llm_router_route_state{state="available"}` at 1 for each of `routes` (new
        ones: a route with state keeps its series)."""
        available = RouteState.AVAILABLE.value
        for route in routes:
            self._state_child(*route_labels(route), available).set(1)

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

    def forget(
        self, removed: Iterable[Route], removed_keys: Iterable[Key], models: Iterable[str]
    ) -> None:
        """After a reload: the gauges of removed routes and keys, and of client models
        not in `models`, are gone, so no alert reads one that is no longer there as
        stuck."""
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
        kept = set(models)
        for labels in [labels for labels in self._model_labels if labels[0] not in kept]:
            self._model_labels.discard(labels)
            self._model_reason.pop(labels[0], None)
            _drop(self.model_disabled, *labels)


def _drop(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never observed
        gauge.remove(*labels)
