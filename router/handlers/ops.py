"""Liveness, readiness and the Prometheus page."""

from __future__ import annotations

from aiohttp import web

from router.handlers.scrape import refresh_state_gauges, render
from router.handlers.state import APP_STATE
from router.health.status import models_out
from router.rules.plan import unavailability


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Config loaded, not shutting down, and at least one route can take a request now."""
    current = request.app[APP_STATE]
    if current.draining:  # SIGTERM: out of the load balancer before the listener closes
        return web.json_response({"status": "draining"}, status=503)
    state = current.state
    routes = state.config.all_routes()
    snapshot = await state.health.snapshot(routes)
    available = [r.id for r in routes if unavailability(r, snapshot[r.id], 0) is None]
    body: dict[str, object] = {
        "status": "ready" if available else "unavailable",
        "routes_available": len(available),
        "routes_total": len(routes),
    }
    # A model over its budget is counted, not a reason to take the replica out: its
    # requests still get answers (its fallbacks, or a 503 that names the budget), and
    # the budget is shared, so every replica would leave the load balancer at once.
    # A count, not names: /readyz answers anyone; /admin/routes says which.
    out = await models_out(state.health, state.config)
    if out:
        body["models_disabled"] = len(out)
    degraded = state.state_store.degraded()
    settings = state.config.state
    if settings.backend != "memory" or settings.snapshot:
        # Not a reason to take the replica out: it serves on its own copy meanwhile (a
        # snapshot it cannot write costs only what a restart would forget).
        body["state_store"] = {
            "backend": settings.backend if settings.backend != "memory" else "snapshot",
            "status": "degraded" if degraded else "ok",
            **({"error": degraded} if degraded else {}),
        }
    return web.json_response(body, status=200 if available else 503)


# Every name here is a classic one, so the body is text format 0.0.4, the version every
# Prometheus release reads (prometheus_client 0.26 would announce 1.0.0).
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus exposition; the gauges of routes that have state are refreshed from
    health first, and the page is rendered off the event loop (handlers/scrape.py)."""
    state = request.app[APP_STATE].state
    metrics = state.metrics
    await refresh_state_gauges(metrics, state.health, state.state_store)
    metrics.state.state_store_degraded.set(1 if state.state_store.degraded() else 0)
    body = await render(metrics)
    return web.Response(body=body, headers={"Content-Type": EXPOSITION_CONTENT_TYPE})
