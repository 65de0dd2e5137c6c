"""POST /admin/restore?key=NAME: a key back in rotation now, on every replica.

For the operator who has added credit to a key out of quota, or enabled again a key the
provider refused: without this the key waits out `key_disable` (an hour by default), and
with Redis a restart does not help. The key's blocks and its routes' are lifted, but for
a budget's (HealthTracker.restore); the answer names what was lifted.
"""

from __future__ import annotations

from aiohttp import web

from router.handlers.state import APP_STATE

_NO_STORE = {"Cache-Control": "no-store"}


async def restore_key(request: web.Request) -> web.Response:
    """200 with what was lifted (nothing, for a key that was in rotation); 400 without
    `key`, 404 for a key the config does not have."""
    name = request.query.get("key", "")
    if not name:
        return _rejected(400, "name the key: POST /admin/restore?key=NAME")
    state = request.app[APP_STATE].state
    key = state.config.keys.get(name)
    if key is None:
        return _rejected(404, f"no key named {name!r} in the config serving now")
    routes = [route for route in state.config.all_routes() if route.key.name == name]
    lifted = await state.health.restore(key, routes)
    answer = {
        "status": "restored",
        "key": name,
        "lifted": [{"name": scope, "reason": reason.value} for scope, reason in lifted],
    }
    return web.json_response(answer, headers=_NO_STORE)


def _rejected(status: int, error: str) -> web.Response:
    answer = {"status": "rejected", "error": error}
    return web.json_response(answer, status=status, headers=_NO_STORE)
