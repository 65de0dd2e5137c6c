"""The model APIs: parse, delegate to failover, write the answer or commit and relay.

One handler serves every client-facing API; the operation picks the routes that can
serve it and the dialect says how its streams and errors look.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from router.errors import BodyTooLarge, InvalidRequest, UnknownModel
from router.failover.call import Answer, Call
from router.failover.open_stream import OpenStream
from router.handlers import answer_headers
from router.handlers.body_room import BodyRoom, read_counted
from router.handlers.client_answer import ClientAnswer
from router.handlers.client_stream import ClientStream
from router.handlers.endpoint import Handler
from router.handlers.relay import relay
from router.handlers.request_body import arrived, forget_body
from router.handlers.state import APP_STATE, REQUEST_TRACE, RouterState
from router.outcomes import Attempt
from router.rules.affinity import conversation_key
from router.types import TRANSLATE_EXTRA, ModelSpec, Operation, Route
from router.upstream import UpstreamResponse, forwardable_headers, translate
from router.wire import fastjson
from router.wire.dialects import Dialect
from router.wire.needs import request_needs

PATHS = {
    Operation.CHAT: "/v1/chat/completions",
    Operation.EMBEDDINGS: "/v1/embeddings",
    Operation.RESPONSES: "/v1/responses",
    Operation.MESSAGES: "/v1/messages",
    Operation.COUNT_TOKENS: "/v1/messages/count_tokens",
}
# Module constants, not enum class attributes, on the request path: see router/outcomes.py.
_CHAT, _COUNT_TOKENS = Operation.CHAT, Operation.COUNT_TOKENS


async def read_json_object(request: web.Request, bodies: BodyRoom) -> tuple[bytes, dict[str, Any]]:
    """The body, counted in `bodies` as it arrives (body_room.py), and its parse; kept
    on the trace, so that a second reader (count_tokens, then its passthrough) takes
    both from there."""
    trace = request[REQUEST_TRACE]
    if trace.body is not None:
        return trace.body
    limit = request.client_max_size
    length = request.content_length
    try:
        if length is not None and length > limit:
            # Refused before any of it is read, as nginx's client_max_body_size: aiohttp
            # then reads out (and drops) what the client sends for a while, so a client
            # still uploading reads the 413 rather than a reset connection.
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
        body = arrived(request)
        if body is None:
            if length is not None:
                bodies.check(length)  # or its 503, before a byte is read
            body = await read_counted(request, bodies, trace)
        else:
            bodies.take(trace, len(body))
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(
            f"request body is larger than the limit of {limit} bytes (server.max_body_bytes)"
        ) from None
    try:
        payload = fastjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object", "invalid_body")
    if fastjson.too_deep(body, payload):
        raise InvalidRequest(
            f"request body nests more than {fastjson.MAX_DEPTH} levels deep", "invalid_body"
        )
    trace.body = (body, payload)
    return body, payload


def routing_headers(route: Route | None, attempts: tuple[Attempt, ...]) -> dict[str, str]:
    headers = {answer_headers.ATTEMPTS: str(len(attempts))}
    if route is not None:
        headers[answer_headers.ROUTE] = route.id
    return headers


def model_api(operation: Operation, dialect: Dialect, bodies: BodyRoom) -> Handler:
    """`bodies`: the room the process's request bodies share (body_room.py)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[APP_STATE].state
        body, payload = await read_json_object(request, bodies)
        trace = request[REQUEST_TRACE]
        model = find_model(state, payload)
        trace.model = model.name  # a request refused from here on is still the model's
        call = parse_call(state, request, body, payload, model, operation, dialect)
        in_flight = state.metrics.model_series(call.model.name).in_flight
        in_flight.inc(1)
        try:
            result = await state.failover.run(call)  # or raises NoCapacity, DeadlineExceeded
            trace.served(result)
            if isinstance(result, Answer):
                return answer_response(result)
            async with result as stream:  # leaving it settles the attempt: health, cost
                response = await commit(request, stream, state, call)  # no failover after this
                client_dialect, strip_usage = call.dialect, call.strip_usage
                if type(stream.upstream) is UpstreamResponse:
                    # Nothing sends the body again: its room and its memory go now, not
                    # when a long generation ends. (litellm keeps a translated request's
                    # messages until its stream ends, so that one keeps its room.)
                    del body, payload, call
                    bodies.let_go(trace)
                    forget_body(request)
                stream.end = await relay(
                    stream,
                    response,
                    client_dialect,
                    stream.route.timeouts or state.config.timeouts,
                    strip_usage=strip_usage,
                )
            return response
        finally:
            in_flight.dec(1)

    return handle


def find_model(state: RouterState, payload: dict[str, Any]) -> ModelSpec:
    """The model the body names, or the CallerError that says what is wrong."""
    model_name = payload.get("model")
    if not isinstance(model_name, str) or not model_name:
        raise InvalidRequest("you must provide a model parameter", "missing_model")
    model = state.config.models.get(model_name)
    if model is None:
        raise UnknownModel(
            f"the model '{model_name[:200]}' does not exist on this router; "
            f"configured models: {', '.join(state.config.models)}"
        )
    return model


def _without_translation(state: RouterState, model: ModelSpec, operation: Operation) -> str:
    """Why, when a route of the chain would serve `operation` through litellm, but
    litellm (the translate extra) is not installed."""
    if translate.available():
        return ""
    models = state.config.models
    if any(
        translate.translation(route.key.provider, operation)
        for name in model.chain
        for route in models[name].routes
    ):
        return f" without translation, which needs litellm: {TRANSLATE_EXTRA}"
    return ""


def parse_call(
    state: RouterState,
    request: web.Request,
    body: bytes,
    payload: dict[str, Any],
    model: ModelSpec,
    operation: Operation,
    dialect: Dialect,
) -> Call:
    """The client's request for `model` as a Call, or the CallerError that says what is
    wrong with it."""
    if not state.failover.serves(model, operation):
        raise InvalidRequest(
            f"no route of '{model.name}' (or its fallbacks) serves {PATHS[operation]}"
            + _without_translation(state, model, operation),
            "unsupported_api_for_model",
        )
    # A count (count_tokens) generates nothing: it never streams nor spends headroom.
    counting = operation is _COUNT_TOKENS
    max_tokens = (
        payload.get("max_completion_tokens")
        or payload.get("max_tokens")
        or payload.get("max_output_tokens")  # the first that is set, per API
        or 0
    )
    stream = payload.get("stream") is True and not counting
    options = payload.get("stream_options")
    # Costs and token metrics need the usage chunk, which OpenAI sends only when asked:
    # each attempt asks on the client's behalf where the key allows (failover/usage_ask.py),
    # and the relay keeps the extra chunk from the client (§9.1).
    strip_usage = (
        stream
        and operation is _CHAT
        and (options is None or isinstance(options, dict))
        and not _asks_usage(payload)
    )
    # A cheap estimate (about 4 bytes a token) for the headroom check; exact counts are
    # not worth their cost on the hot path.
    need_tokens = (
        0 if counting else len(body) // 4 + (max_tokens if isinstance(max_tokens, int) else 0)
    )
    affinity = conversation_key(payload) if not counting and state.failover.chooses(model) else b""
    needs = request_needs(operation, payload, model.checked_needs.get(operation, 0))
    headers = forwardable_headers(request.headers)
    # Positional, in the fields' order: a class called with keywords gets them as a
    # dict (CPython 3.11), which more than doubled the cost of building a Call.
    return Call(
        model, operation, dialect, payload, body, stream, headers, need_tokens, strip_usage,
        affinity, needs, counting,
    )  # fmt: skip


async def commit(
    request: web.Request, stream: OpenStream, state: RouterState, call: Call
) -> ClientStream:
    """Send the stream's status and headers: the commit point. From here on an upstream
    failure ends the stream with an error event; it cannot fail over."""
    trace = request[REQUEST_TRACE]
    route = stream.route
    response = ClientStream.sse(
        trace.request_id, None if route is None else route.id, len(stream.attempts)
    )
    await response.prepare(request)
    trace.committed = response  # from here on, any failure ends this stream (endpoint.py)
    trace.ttft = time.perf_counter() - trace.started
    state.metrics.ttft_series(call.model.name, stream.route).observe(trace.ttft)
    return response


def _asks_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def answer_response(answer: Answer) -> web.Response:
    headers = {
        "Content-Type": answer.content_type,
        **routing_headers(answer.route, answer.attempts),
    }
    if answer.cost_usd is not None:
        # Streams send their headers before the usage exists; they log the cost instead.
        headers[answer_headers.COST] = f"{answer.cost_usd:.8f}"
    return ClientAnswer(status=answer.status, body=answer.body, headers=headers)
