"""One model request, whatever its wire format: the order of events every endpoint shares.

Authenticate the key the wire format finds, record the request, parse the body, then either
play the next scripted fault for that key or ask the key's buckets for admission and
answer. Keys, buckets, fault scripts and stats are per key and shared by every format, so
a key's RPM drains the same whether it is spent on `/v1/chat/completions` or
`/v1/messages`. Scripted faults bypass the buckets (they neither check nor pay), so a
script plays out the same whatever the limits are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from router.sim.faults import Fault
from router.sim.openai import errors as openai_errors
from router.sim.state import KeyStats, RecordedRequest, SimKey, SimState
from router.sim.streams import Ending, StreamPlan, drop_connection, hold_silent, write_stream
from router.sim.tokens import estimate_tokens
from router.sim.wire_format import (
    ErrorReply,
    InvalidRequest,
    ModelCall,
    Usage,
    WireFormat,
    reply_pieces,
)

JSON = "application/json"

_ENDINGS: dict[str, Ending] = {
    "stream_cut": "cut",
    "stream_error": "error",
    "stream_stall": "stall",
}


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a request admitted for an answer gets: the text, its usage and its headers."""

    call: ModelCall
    text: str
    usage: Usage
    headers: dict[str, str]
    fault: Fault | None
    request_id: str


class ModelEndpoint:
    """The aiohttp handler for one wire format's model endpoint over the shared `SimState`."""

    def __init__(
        self, state: SimState, wire: WireFormat, shutting_down: Callable[[], bool]
    ) -> None:
        self._state = state
        self._wire = wire
        self._shutting_down = shutting_down

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        wire = self._wire
        presented = wire.presented_key(request)
        key = self._state.by_api_key.get(presented) if presented else None
        self._record(request, key, body)
        request_id = wire.new_request_id()
        if key is None:
            reply = wire.unknown_key(presented, request_id)
            return error_response(reply, wire.id_headers(request_id))
        stats = self._state.stats[key.name]
        stats.count_request(wire.name)
        try:
            return await self._for_key(request, key, body, request_id, stats)
        except asyncio.CancelledError:
            # handler_cancellation: the client went away while we slept, hung or streamed.
            stats.cancelled += 1
            raise

    def _record(self, request: web.Request, key: SimKey | None, body: bytes) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._state.requests.append(
            RecordedRequest(
                key.name if key else "",
                request.path,
                headers,
                body,
                query=request.query_string,
                format=self._wire.name,
            )
        )

    async def _for_key(
        self, request: web.Request, key: SimKey, body: bytes, request_id: str, stats: KeyStats
    ) -> web.StreamResponse:
        state, wire = self._state, self._wire
        limits = state.limits[key.name]
        id_headers = wire.id_headers(request_id)
        try:
            if key.refuses_stream_options and body.find(b'"stream_options"') >= 0:
                raise InvalidRequest(openai_errors.unrecognized_argument("stream_options"))
            call = wire.parse(request, body, request_id)
        except InvalidRequest as exc:
            headers = wire.limit_headers(limits.state(state.now())) | id_headers
            return await self._reject(key, stats, exc.reply, headers)
        fault = state.queues[key.name].pop()
        text = key.reply_for(call.model) if call.generates else ""
        usage = Usage(call.prompt_tokens, estimate_tokens(text))
        if fault is None and call.counts_only:
            headers = {}  # its own limits, not modelled: no bucket, no rate-limit headers
        elif fault is None:
            needed = call.prompt_tokens + (call.max_tokens or usage.completion_tokens)
            admission = limits.admit(needed, state.now())
            if not admission.admitted:
                reply = wire.rate_limited(admission, call, request_id)
                return await self._reject(key, stats, reply, id_headers)
            headers = wire.limit_headers(admission.state)
            if call.prefixes:
                cached = state.caches[key.name].use(call.prefixes, state.now())
                # Every boundary of the prompt is now cached: what was not, was written.
                written = usage.prompt_tokens - cached
                usage = Usage(usage.prompt_tokens, usage.completion_tokens, cached, written)
        else:
            limit_state = limits.state(state.now())
            if fault.is_error_reply:
                reply = wire.fault_reply(
                    fault, call, api_key=key.api_key, request_id=request_id, state=limit_state
                )
                return await self._reject(key, stats, reply, id_headers)
            headers = wire.limit_headers(limit_state)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
        headers |= id_headers
        if key.latency:
            await asyncio.sleep(key.latency)
        answer = _Answer(call, text, usage, headers, fault, request_id)
        if call.stream:
            return await self._stream(request, key, answer, stats)
        return await self._complete(request, answer, stats)

    async def _reject(
        self, key: SimKey, stats: KeyStats, reply: ErrorReply, headers: dict[str, str]
    ) -> web.Response:
        if key.latency:
            await asyncio.sleep(key.latency)
        stats.rejected += 1
        return error_response(reply, headers)

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
            await hold_silent(request, stats, self._shutting_down)
            return web.Response()
        if kind == "stream_error":
            reply = self._wire.stream_failure(answer.call, answer.request_id)
            stats.rejected += 1
            return error_response(reply, answer.headers)
        body = self._wire.body(answer.call, answer.text, answer.usage)
        stats.served += 1
        return web.Response(body=body, content_type=JSON, headers=answer.headers)

    async def _stream(
        self, request: web.Request, key: SimKey, answer: _Answer, stats: KeyStats
    ) -> web.StreamResponse:
        fault = answer.fault
        if fault is not None and fault.kind == "hang":
            await hold_silent(request, stats, self._shutting_down)
            return web.Response()
        encoder = self._wire.encoder(answer.call, answer.text, answer.usage)
        plan = StreamPlan(
            pieces=reply_pieces(answer.text),
            chunk_delay=key.chunk_delay,
            ending=_ENDINGS.get(fault.kind, "done") if fault else "done",
            after_chunks=fault.after_chunks if fault else 0,
        )
        return await write_stream(
            request, answer.headers, encoder, plan, stats, self._shutting_down
        )


def error_response(reply: ErrorReply, headers: dict[str, str]) -> web.Response:
    """`headers` (limits, request id) under the reply's own (retry-after, ...)."""
    merged = headers | reply.headers
    return web.Response(status=reply.status, body=reply.body, content_type=JSON, headers=merged)
