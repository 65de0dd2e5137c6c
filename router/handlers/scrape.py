"""The /metrics page: refresh the state gauges of the routes that have state, then
render the page a part at a time, yielding to the event loop between parts.

Cost scales with what happened, not with the config: a route no attempt, block or
headroom report ever touched (in this process or, through a shared store, another)
has no state scope, is available, and its gauges are not visited. The routes that do
have state are read from health a fixed chunk at a time (and the loop is yielded after
every few dozen routes whose series are created, at the first scrape after they got
state), and the page is rendered in parts of a few hundred series
(telemetry/exposition.py), so no piece of a scrape holds the loop for more than a few
milliseconds: requests and streams in flight keep going.
(Rendering in a worker thread was measured too: GIL hand-offs between the render
thread and the loop stalled requests 10-30 ms on a busy 2-core machine, the parts
3-5 ms; bench/metrics_scrape.py.)
"""

from __future__ import annotations

import asyncio

from router.health.scopes import scope_name
from router.health.status import disabled_keys, route_statuses
from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.telemetry.metrics import Metrics

# New series a scrape creates between two yields to the loop (well under 1 ms of CPU
# with their first render). The first scrape after every route of 2,000 has reported
# headroom creates 8,000 (4 per route), one after an outage changed every route's state
# 2,000 to 4,000: 64 routes at a time, without this bound, they held the loop 20 ms.
NEW_SERIES_PER_STEP = 128


async def refresh_state_gauges(metrics: Metrics, health: HealthTracker, store: StateStore) -> None:
    """Each `await` lets a reload swap the config in (`metrics.routes` is then another
    table): the refresh stops there, or it would make gauges for the routes the reload
    just removed, for good. The page says what it had; the next scrape, the rest."""
    table = metrics.routes
    stateful = _stateful_routes(metrics, store)
    for index in sorted({table.chunk_of[route_id] for route_id in stateful}):
        statuses = await route_statuses(health, table.chunks[index])
        if metrics.routes is not table:
            return
        created = 0
        for status in statuses:
            if status.route.id in stateful:
                created += metrics.state.observe_route(
                    status.route, status.state, status.available_in, status.health.headroom
                )
                if created >= NEW_SERIES_PER_STEP:
                    created = 0
                    await asyncio.sleep(0)  # a snapshot a few ms old is still the truth
                    if metrics.routes is not table:
                        return
        disabled = disabled_keys(statuses)
        for key in {s.route.key for s in statuses if s.route.id in stateful}:
            reason = disabled.get(key.name)
            said = None if reason is None else reason.value
            metrics.state.observe_key(key.name, key.provider, said)
        await asyncio.sleep(0)  # let requests in flight run between chunks
        if metrics.routes is not table:
            return
    await _refresh_model_gauges(metrics, health, store)


async def _refresh_model_gauges(metrics: Metrics, health: HealthTracker, store: StateStore) -> None:
    """The client models out for their budget: those whose scope has state, and those
    the page said were out last time (their block may have ended since)."""
    budgeted = metrics.routes.budgeted
    names = set(metrics.state.reported_models())
    if budgeted:
        names.update(
            name
            for kind, name in map(scope_name, store.scopes())
            if kind == "model" and name in budgeted
        )
    if not names:
        return
    table = metrics.routes
    blocks = await health.model_blocks(sorted(names))
    if metrics.routes is not table:
        return  # reloaded meanwhile: a model it removed would get its gauge back
    for name in names:
        block = blocks.get(name) if name in budgeted else None  # a budget gone: back
        metrics.state.observe_model(name, None if block is None else block.reason.value)


def _stateful_routes(metrics: Metrics, store: StateStore) -> set[str]:
    """Route ids whose route or key scope has state (tracker.route_scope, key_scope)."""
    table = metrics.routes
    stateful: set[str] = set()
    for kind, name in map(scope_name, store.scopes()):
        if kind == "route":
            if name in table.chunk_of:  # not a route of an earlier config
                stateful.add(name)
        elif kind == "key":
            stateful.update(table.routes_of_key.get(name, ()))
    return stateful


async def render(metrics: Metrics) -> bytes:
    """The exposition text (telemetry/exposition.py), a part at a time, letting the
    loop run requests between parts."""
    parts = []
    for part in metrics.renderer.parts():
        parts.append(part)
        await asyncio.sleep(0)
    return b"".join(parts)
