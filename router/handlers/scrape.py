"""The /metrics page: refresh the state gauges of the routes that have state, then
render the page off the event loop.

Cost scales with what happened, not with the config: a route no attempt, block or
headroom report ever touched (in this process or, through a shared store, another)
has no state scope, is available, and its gauges are not visited. The routes that do
have state are read from health a fixed chunk at a time, yielding to the loop between
chunks, and the page is rendered in a worker thread (prometheus_client guards every
value and each metric's child table with locks, so a request updating a counter
meanwhile is safe), so requests and streams in flight do not wait for a scrape.
"""

from __future__ import annotations

import asyncio

from router.health.status import disabled_keys, route_statuses
from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.telemetry.metrics import Metrics


async def refresh_state_gauges(metrics: Metrics, health: HealthTracker, store: StateStore) -> None:
    table = metrics.routes
    stateful = _stateful_routes(metrics, store)
    for index in sorted({table.chunk_of[route_id] for route_id in stateful}):
        statuses = await route_statuses(health, table.chunks[index])
        for status in statuses:
            if status.route.id in stateful:
                metrics.observe_route(
                    status.route, status.state, status.available_in, status.health.headroom
                )
        disabled = disabled_keys(statuses)
        for key in {s.route.key for s in statuses if s.route.id in stateful}:
            reason = disabled.get(key.name)
            metrics.observe_key(key.name, key.provider, None if reason is None else reason.value)
        await asyncio.sleep(0)  # let requests in flight run between chunks


def _stateful_routes(metrics: Metrics, store: StateStore) -> set[str]:
    """Route ids whose route or key scope has state (tracker.route_scope, key_scope)."""
    table = metrics.routes
    stateful: set[str] = set()
    for scope in store.scopes():
        kind, _, name = scope.partition(":")
        if kind == "route":
            if name in table.chunk_of:  # not a route of an earlier config
                stateful.add(name)
        elif kind == "key":
            stateful.update(table.routes_of_key.get(name, ()))
    return stateful


async def render(metrics: Metrics) -> bytes:
    """The exposition text, built in a worker thread (telemetry/exposition.py)."""
    return await asyncio.to_thread(metrics.renderer.render)
