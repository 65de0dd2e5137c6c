"""POST /admin/reload: routes.yaml read again; the outcome as JSON.

The reload itself is the serve loop's (router/reload.py); this handler only asks for one
and writes the answer.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web


class ReloadOutcome(Protocol):
    @property
    def error(self) -> str | None: ...

    def as_json(self) -> dict[str, Any]: ...


class Reloads(Protocol):
    @property
    def has_file(self) -> bool: ...

    async def reload(self) -> ReloadOutcome: ...


RELOADER = web.AppKey("router_reloader", Reloads)


async def reload_config(request: web.Request) -> web.Response:
    """200 with what changed, or 422 with the file:line error (the old config serves);
    409 for a router not started from a file."""
    reloader = request.app[RELOADER]
    outcome = await reloader.reload()
    status = 200
    if outcome.error is not None:
        status = 422 if reloader.has_file else 409
    return web.json_response(
        outcome.as_json(), status=status, headers={"Cache-Control": "no-store"}
    )
