"""The simulator's aiohttp app: OpenAI's `/v1` endpoints plus `/_sim` control endpoints.

One chat request: authenticate the bearer key, record it, parse the body, then either play
the next scripted fault for that key or ask the key's buckets for admission and answer.
Scripted faults bypass the buckets (they neither check nor pay), so a script plays out
the same whatever the limits are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from router.sim import openai_errors
from router.sim.chat_request import ChatRequest, InvalidChatRequest, parse_chat_request
from router.sim.chat_request import estimate_tokens as estimate_completion_tokens
from router.sim.faults import Fault
from router.sim.openai_errors import ErrorReply
from router.sim.openai_wire import (
    ChunkWriter,
    Usage,
    completion_body,
    models_list,
    new_completion_id,
    new_request_id,
    ratelimit_headers,
    reply_pieces,
)
from router.sim.state import KeyStats, RecordedRequest, SimKey, SimState
from router.sim.streams import Ending, StreamPlan, drop_connection, hold_silent, write_stream

_JSON = "application/json"


class SimHandlers:
    """Request handlers over one `SimState`; one instance per built app."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._shutting_down = False

    def shutting_down(self) -> bool:
        return self._shutting_down

    async def on_shutdown(self, _app: web.Application) -> None:
        # Lets hung and stalled handlers end at once instead of holding up runner cleanup.
        self._shutting_down = True

    # --- /v1 ------------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = self._authenticate_and_record(request, body)
        request_id = new_request_id()
        if key is None:
            return error_response(openai_errors.invalid_api_key(_bearer(request)), request_id)
        stats = self._state.stats[key.name]
        stats.requests += 1
        try:
            return await self._chat_for_key(request, key, body, request_id, stats)
        except asyncio.CancelledError:
            # handler_cancellation: the client went away while we slept, hung or streamed.
            stats.cancelled += 1
            raise

    async def models(self, request: web.Request) -> web.Response:
        key = self._authenticate_and_record(request, b"")
        request_id = new_request_id()
        if key is None:
            return error_response(openai_errors.invalid_api_key(_bearer(request)), request_id)
        headers = {"x-request-id": request_id}
        return web.Response(
            body=models_list(self._state.models), content_type=_JSON, headers=headers
        )

    def _authenticate_and_record(self, request: web.Request, body: bytes) -> SimKey | None:
        presented = _bearer(request)
        key = self._state.by_api_key.get(presented) if presented else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = RecordedRequest(key.name if key else "", request.path, headers, body)
        self._state.requests.append(recorded)
        return key

    async def _chat_for_key(
        self, request: web.Request, key: SimKey, body: bytes, request_id: str, stats: KeyStats
    ) -> web.StreamResponse:
        state = self._state
        limits = state.limits[key.name]
        try:
            chat = parse_chat_request(body)
        except InvalidChatRequest as exc:
            reply = exc.reply
            headers = ratelimit_headers(limits.state(state.now()))
            return await self._reject(key, stats, reply, request_id, headers)
        fault = state.queues[key.name].pop()
        reply_text = key.reply_for(chat.model)
        usage = Usage(chat.prompt_tokens, estimate_completion_tokens(reply_text))
        if fault is None:
            needed = chat.prompt_tokens + (chat.max_tokens or usage.completion_tokens)
            admission = limits.admit(needed, state.now())
            if not admission.admitted:
                reply = openai_errors.rate_limited(admission, chat.model)
                return await self._reject(key, stats, reply, request_id)
            headers = ratelimit_headers(admission.state)
        else:
            limit_state = limits.state(state.now())
            if fault.is_error_reply:
                reply = openai_errors.fault_reply(
                    fault,
                    model=chat.model,
                    api_key=key.api_key,
                    request_id=request_id,
                    state=limit_state,
                )
                return await self._reject(key, stats, reply, request_id)
            headers = ratelimit_headers(limit_state)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
        headers["x-request-id"] = request_id
        if key.latency:
            await asyncio.sleep(key.latency)
        answer = _Answer(chat, reply_text, usage, headers, fault)
        if chat.stream:
            return await self._stream(request, key, answer, stats)
        return await self._complete(request, answer, stats)

    async def _reject(
        self,
        key: SimKey,
        stats: KeyStats,
        reply: ErrorReply,
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if key.latency:
            await asyncio.sleep(key.latency)
        stats.rejected += 1
        return error_response(reply, request_id, headers)

    async def _complete(
        self, request: web.Request, answer: _Answer, stats: KeyStats
    ) -> web.StreamResponse:
        kind = answer.fault.kind if answer.fault else None
        if kind == "stream_cut":
            # No stream to cut: the connection drops before any response byte.
            drop_connection(request)
            stats.dropped += 1
            return web.Response()
        if kind in ("hang", "stream_stall"):
            await hold_silent(request, stats, self.shutting_down)
            return web.Response()
        request_id = answer.headers["x-request-id"]
        if kind == "stream_error":
            # The nearest non-streaming equivalent of a failure mid-generation.
            reply = openai_errors.fault_reply(
                Fault.server_error(500), model=answer.chat.model, api_key="", request_id=request_id
            )
            stats.rejected += 1
            return error_response(reply, request_id, answer.headers)
        body = completion_body(new_completion_id(), answer.chat.model, answer.text, answer.usage)
        stats.served += 1
        return web.Response(body=body, content_type=_JSON, headers=answer.headers)

    async def _stream(
        self, request: web.Request, key: SimKey, answer: _Answer, stats: KeyStats
    ) -> web.StreamResponse:
        fault = answer.fault
        if fault is not None and fault.kind == "hang":
            await hold_silent(request, stats, self.shutting_down)
            return web.Response()
        chunks = ChunkWriter(
            new_completion_id(), answer.chat.model, include_usage=answer.chat.include_usage
        )
        plan = StreamPlan(
            pieces=reply_pieces(answer.text),
            usage=answer.usage,
            chunk_delay=key.chunk_delay,
            ending=_ENDINGS.get(fault.kind, "done") if fault else "done",
            after_chunks=fault.after_chunks if fault else 0,
        )
        return await write_stream(request, answer.headers, chunks, plan, stats, self.shutting_down)

    # --- /_sim control ----------------------------------------------------------------------

    async def post_faults(self, request: web.Request) -> web.Response:
        """`{"key": "a", "faults": [{"kind": "rate_limit", "retry_after": 2}], "times": 1}`"""
        try:
            data = await request.json()
            name = str(data["key"])
            faults = [Fault.from_dict(item) for item in data.get("faults", [])]
            times = int(data.get("times", 1))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return _control_error(400, f"bad fault script: {exc!r}")
        if name not in self._state.keys:
            return _control_error(404, f"no SimKey named {name!r}")
        try:
            self._state.inject(name, faults, times)
        except ValueError as exc:
            return _control_error(400, str(exc))
        return web.json_response({"key": name, "queued": len(self._state.queues[name])})

    async def delete_faults(self, request: web.Request) -> web.Response:
        name = request.query.get("key")
        try:
            self._state.clear(name)
        except KeyError as exc:
            return _control_error(404, str(exc))
        return web.json_response({"cleared": name or "all"})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self._state.stats_dict())


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a request admitted for an answer gets: the text, its usage and its headers."""

    chat: ChatRequest
    text: str
    usage: Usage
    headers: dict[str, str]
    fault: Fault | None


_ENDINGS: dict[str, Ending] = {
    "stream_cut": "cut",
    "stream_error": "error",
    "stream_stall": "stall",
}


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def error_response(
    reply: ErrorReply, request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    merged = (headers or {}) | reply.headers | {"x-request-id": request_id}
    return web.Response(status=reply.status, body=reply.body, content_type=_JSON, headers=merged)


def _control_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(state: SimState) -> web.Application:
    handlers = SimHandlers(state)
    app = web.Application()
    app.on_shutdown.append(handlers.on_shutdown)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/_sim/faults", handlers.post_faults)
    app.router.add_delete("/_sim/faults", handlers.delete_faults)
    app.router.add_get("/_sim/stats", handlers.get_stats)
    return app
