"""`POST /v1/messages/count_tokens`: passed through to Anthropic routes, counted here
for models that only translated routes serve.

A model whose chain has an Anthropic route is counted upstream, with the same key
choice and failover as `/v1/messages` (`model_api`). A model served only through
litellm (an OpenAI model behind `/v1/messages`) has nobody upstream to ask, so the
router counts the request itself (`upstream/translate/token_count.py`) and answers in
Anthropic's shape, `{"input_tokens": N}`, saying how it counted in
`x-router-counted-by`. So does a count no key could take upstream (all limited or
down): the client gets an estimate rather than a 429 or 529.
"""

from __future__ import annotations

from aiohttp import web

from router.errors import InvalidRequest, NoCapacity
from router.handlers import answer_headers
from router.handlers.body_room import BodyRoom
from router.handlers.endpoint import Handler
from router.handlers.model_api import PATHS, find_model, read_json_object
from router.handlers.state import APP_STATE, REQUEST_TRACE, RouterState
from router.types import ModelSpec, Operation, Route
from router.upstream.translate.token_count import count_input_tokens


def count_tokens(passthrough: Handler, bodies: BodyRoom) -> Handler:
    """`passthrough`: the model API handler for Operation.COUNT_TOKENS; `bodies`: the
    room request bodies share (body_room.py)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[APP_STATE].state
        body, payload = await read_json_object(request, bodies)
        model = find_model(state, payload)
        trace = request[REQUEST_TRACE]
        if state.failover.serves(model, Operation.COUNT_TOKENS):
            try:
                return await passthrough(request)  # the trace keeps the body: read once
            except NoCapacity as exc:
                # Every key that counts is limited or down (a Messages 429 cools a key
                # for counts too): an estimate serves the client better than a refusal.
                trace.attempts = exc.attempts
        route = counting_route(state, model)
        if not isinstance(payload.get("messages"), list):
            raise InvalidRequest("messages: Field required (a list)", "invalid_body")
        trace.model = model.name
        count = await count_input_tokens(route, payload, body)
        headers = {
            answer_headers.ATTEMPTS: str(len(trace.attempts)),
            answer_headers.COUNTED_BY: count.method,
        }
        return web.json_response({"input_tokens": count.input_tokens}, headers=headers)

    return handle


def counting_route(state: RouterState, model: ModelSpec) -> Route:
    """The route whose model counts the tokens: the first that would serve Messages
    for `model`, in the order of its chain."""
    for name in model.chain:
        routes = state.config.models[name].routes_for[Operation.MESSAGES]
        if routes:
            return routes[0]
    raise InvalidRequest(
        f"no route of '{model.name}' (or its fallbacks) serves "
        f"{PATHS[Operation.COUNT_TOKENS]} or {PATHS[Operation.MESSAGES]}",
        "unsupported_api_for_model",
    )
