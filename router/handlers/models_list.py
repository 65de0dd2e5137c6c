"""`GET /v1/models` and `GET /v1/models/{id}`: the client model names routes.yaml
configures, in the shape of the SDK that asks.

OpenAI's and Anthropic's SDKs both call these paths, with different bodies: OpenAI's
`{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`, one
page; Anthropic's `{"data": [{"type": "model", "id", "display_name", "created_at"}],
"has_more", "first_id", "last_id"}`, paged by `limit`, `after_id` and `before_id`.
Anthropic's SDKs send `anthropic-version` on every request, OpenAI's never, so that
header picks the shape, errors included: an unknown id (404), a bad page size (400), a
missing router key (401) or the router's own fault (500), as the model APIs answer them.
The handlers raise; endpoint() writes the error in `asker_dialect` (server.py).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from router.errors import InvalidRequest, UnknownModel
from router.handlers.state import APP_STATE
from router.wire.dialects import ANTHROPIC_MESSAGES, OPENAI_CHAT, Dialect

# Neither the router nor routes.yaml knows when a model was made: the epoch, as 0 is.
_EPOCH = "1970-01-01T00:00:00Z"
_ANTHROPIC_PAGE = (1, 1000, 20)  # limit's least, most and default, as Anthropic's API
_LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only: str.isdigit() takes "²"


def _from_anthropic_sdk(request: web.Request) -> bool:
    return "anthropic-version" in request.headers


def asker_dialect(request: web.Request) -> Dialect:
    """The error shape of the SDK that asked."""
    return ANTHROPIC_MESSAGES if _from_anthropic_sdk(request) else OPENAI_CHAT


def _openai(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llm-router"}


def _anthropic(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": _EPOCH}


async def list_models(request: web.Request) -> web.Response:
    names = list(request.app[APP_STATE].state.config.models)
    if not _from_anthropic_sdk(request):
        return web.json_response({"object": "list", "data": [_openai(name) for name in names]})
    page, has_more = _page(names, request.query)
    return web.json_response(
        {
            "data": [_anthropic(name) for name in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    if name not in request.app[APP_STATE].state.config.models:
        raise UnknownModel(f"the model '{name[:200]}' does not exist on this router")
    return web.json_response(_anthropic(name) if _from_anthropic_sdk(request) else _openai(name))


def _page(names: list[str], query: Any) -> tuple[list[str], bool]:
    """The page Anthropic's API would give, and whether more lie that way: `limit`
    names after `after_id`, or the `limit` names just before `before_id`. Past an id
    the router does not have, nothing."""
    least, most, default = _ANTHROPIC_PAGE
    raw = query.get("limit", str(default))
    if not _LIMIT.fullmatch(raw) or not least <= int(raw) <= most:
        raise InvalidRequest(f"limit: must be an integer from {least} to {most}, got {raw[:20]!r}")
    limit = int(raw)
    before, after = query.get("before_id"), query.get("after_id")
    if before is not None:
        end = names.index(before) if before in names else 0
        start = max(0, end - limit)
        return names[start:end], start > 0
    start = 0
    if after is not None:
        start = names.index(after) + 1 if after in names else len(names)
    return names[start : start + limit], start + limit < len(names)
