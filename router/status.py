"""Each route's state as people and Prometheus see it, derived from a health snapshot.

`/metrics` (route gauges) and `/admin` (the status table) both read this, so they can
never tell different stories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from router.health import HealthTracker
from router.metrics import RouteState
from router.policy import RouteHealth, unavailability
from router.types import Route

_STATE_OF_REASON: Mapping[str, RouteState] = {
    "cooldown": RouteState.COOLING_DOWN,
    "headroom": RouteState.COOLING_DOWN,
    "circuit_open": RouteState.CIRCUIT_OPEN,
    "probing": RouteState.HALF_OPEN,
    "quota": RouteState.DISABLED,
    "auth": RouteState.DISABLED,
    "misconfigured": RouteState.DISABLED,
    "budget": RouteState.DISABLED,
}
KEY_DISABLE_REASONS = frozenset({"quota", "auth", "budget"})


@dataclass(frozen=True, slots=True)
class RouteStatus:
    route: Route
    state: RouteState
    reason: str  # why it is not available ("" when it is)
    available_in: float  # seconds; 0 when available now
    health: RouteHealth


def status_of(route: Route, health: RouteHealth) -> RouteStatus:
    blocked = unavailability(route, health, 0)
    if blocked is None:
        state = RouteState.HALF_OPEN if health.half_open else RouteState.AVAILABLE
        return RouteStatus(route, state, "", 0.0, health)
    return RouteStatus(
        route,
        _STATE_OF_REASON.get(blocked.reason, RouteState.DISABLED),
        blocked.reason,
        blocked.recovers_in or 0.0,
        health,
    )


async def route_statuses(health: HealthTracker, routes: Sequence[Route]) -> list[RouteStatus]:
    snapshot = await health.snapshot(routes)
    return [status_of(route, snapshot[route.id]) for route in routes]


def disabled_keys(statuses: Iterable[RouteStatus]) -> dict[str, str]:
    """Key name -> reason, for keys out of rotation (quota or auth)."""
    return {s.route.key.name: s.reason for s in statuses if s.reason in KEY_DISABLE_REASONS}
