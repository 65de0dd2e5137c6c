"""Liveness and readiness for orchestrators."""

from __future__ import annotations

from aiohttp import web

from router.handlers.context import APP_STATE
from router.policy import unavailability


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Config loaded and at least one route can take a request now."""
    state = request.app[APP_STATE]
    routes = state.config.all_routes()
    snapshot = await state.health.snapshot(routes)
    available = [r.id for r in routes if unavailability(r, snapshot[r.id], 0) is None]
    body = {
        "status": "ready" if available else "unavailable",
        "routes_available": len(available),
        "routes_total": len(routes),
    }
    return web.json_response(body, status=200 if available else 503)
