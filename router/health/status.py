"""Each route's state as people and Prometheus see it, derived from a health snapshot.

`/metrics` (route gauges) and `/admin` (the status table) both read this, so they can
never tell different stories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from router.health.store import Block
from router.health.tracker import HealthTracker
from router.outcomes import BlockReason
from router.rules.plan import RouteHealth, unavailability
from router.telemetry.labels import RouteState
from router.types import Config, Route

_STATE_OF_REASON: Mapping[BlockReason, RouteState] = {
    BlockReason.COOLDOWN: RouteState.COOLING_DOWN,
    BlockReason.HEADROOM: RouteState.COOLING_DOWN,
    BlockReason.CIRCUIT_OPEN: RouteState.CIRCUIT_OPEN,
    BlockReason.PROBING: RouteState.HALF_OPEN,
    BlockReason.QUOTA: RouteState.DISABLED,
    BlockReason.AUTH: RouteState.DISABLED,
    BlockReason.MISCONFIGURED: RouteState.DISABLED,
    BlockReason.BUDGET: RouteState.DISABLED,
}


@dataclass(frozen=True, slots=True)
class RouteStatus:
    route: Route
    state: RouteState
    reason: BlockReason | None  # why it is not available (None when it is)
    available_in: float  # seconds; 0 when available now
    health: RouteHealth


def status_of(route: Route, health: RouteHealth) -> RouteStatus:
    blocked = unavailability(route, health, 0)
    if blocked is None:
        state = RouteState.HALF_OPEN if health.half_open else RouteState.AVAILABLE
        return RouteStatus(route, state, None, 0.0, health)
    return RouteStatus(
        route,
        _STATE_OF_REASON[blocked.reason],
        blocked.reason,
        blocked.recovers_in or 0.0,
        health,
    )


async def route_statuses(health: HealthTracker, routes: Sequence[Route]) -> list[RouteStatus]:
    snapshot = await health.snapshot(routes)
    return [status_of(route, snapshot[route.id]) for route in routes]


def disabled_keys(statuses: Iterable[RouteStatus]) -> dict[str, BlockReason]:
    """Key name -> reason, for keys out of rotation (quota, auth or budget)."""
    return {
        s.route.key.name: s.reason
        for s in statuses
        if s.reason is not None and s.reason.takes_key_out
    }


async def models_out(health: HealthTracker, config: Config) -> dict[str, Block]:
    """Client models out of rotation now (over their budget: budgets.py), by name. Only
    a model with a budget is ever out; a block left on the store by one that has none
    now holds nothing (failover skips only budgeted models)."""
    return await health.model_blocks(
        name for name, model in config.models.items() if model.budget is not None
    )
