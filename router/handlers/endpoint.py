"""What every endpoint does around its handler: request id, client auth, errors in the
client's dialect and one `request` log event.

It wraps each handler once, when the route is registered, instead of running as aiohttp
middleware: with no middleware aiohttp calls the handler directly, which saves several
coroutine frames on every await of the request (measured: see README "Performance").
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection

import structlog
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import BadHttpMessage

from router.errors import (
    BodyTooLarge,
    DeadlineExceeded,
    ExpectationFailed,
    Forbidden,
    InternalError,
    InvalidRequest,
    NoCapacity,
    NoRoomForBody,
    OutOfLocalResources,
    PathNotFound,
    RouterError,
    ShuttingDown,
    Unauthorized,
    one_line,
)
from router.failover.call import Answer, walked
from router.failover.open_stream import OpenStream
from router.handlers import answer_headers
from router.handlers.body_room import BodyRoom
from router.handlers.host_check import HostCheck
from router.handlers.state import APP_STATE, REQUEST_TRACE, RequestTrace
from router.handlers.trace_facts import request_facts
from router.outcomes import FailureClass
from router.telemetry.labels import UNKNOWN_MODEL
from router.telemetry.logs import bind_request_id
from router.wire.dialects import OPENAI_CHAT, Dialect
from router.wire.stream_watch import StreamEnd

log = structlog.get_logger("router.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Refusals that continue_if_accepted foresees: answered before any body is asked for.
_OK = FailureClass.OK
_READING = frozenset({"GET", "HEAD"})  # the methods HTTP Basic is taken on (_presented_token)
_REFUSED_UNREAD = (BodyTooLarge, ExpectationFailed, Forbidden, NoRoomForBody, Unauthorized)


class ClientAuth:
    """Demands one of `keys` (Bearer, x-api-key or HTTP Basic's password); with none,
    accepts any token. `field` names the setting the keys come from, for the 401."""

    def __init__(self, keys: Collection[str], field: str = "server.client_keys") -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._field = field

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def check(self, request: web.Request) -> None:
        if not self._keys:
            return
        # A header's bytes that are not UTF-8 come as surrogates: compared as the bytes
        # sent, they match no key (a 401), where encode() would raise (a 500).
        token = _presented_token(request).encode("utf-8", "surrogateescape")
        # Compare against every key in constant time, so timing tells nothing.
        matches = [hmac.compare_digest(token, key) for key in self._keys]
        if not any(matches):
            raise Unauthorized(
                "missing or invalid router key: send 'Authorization: Bearer <key>' "
                f"with one of {self._field}"
            )


def continue_if_accepted(
    hosts: HostCheck | None,
    auth: ClientAuth | None,
    refusal: Handler,
    bodies: BodyRoom | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """The answer to `Expect: 100-continue` on a route guarded by `hosts` and `auth`:
    `100 Continue` only for a request that will be read, from a Host (and Origin) the
    router answers, with a client key that passes, and a body declared within
    server.max_body_bytes. Otherwise nothing: the handler's refusal (403, 401, 413) is
    the answer, with `Connection: close` (_error_response), and the upload is never
    asked for, as nginx checks access before it reads a body. Any other `Expect` gets
    `refusal`'s answer: the route's endpoint around `refuse_expectation`, so its 417 is
    in the endpoint's dialect and logged like any other request."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        length = request.content_length
        if request.version != HttpVersion11 or (length or 0) > request.client_max_size:
            return None
        if length and bodies is not None and not bodies.fits(length):
            return None  # no 100: the handler's 503 says there is no room for it now
        if request.headers.get("Expect", "").lower() != "100-continue":
            return await refusal(request)
        try:
            if hosts is not None and hosts.active:
                hosts.check(request)
            if auth is not None:
                auth.check(request)
        except Exception:  # a refusal (Forbidden, Unauthorized), or a fault: either way
            return None  # no 100; the handler says why, in the client's dialect
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response itself has not begun
        return None

    return expect


async def refuse_expectation(request: web.Request) -> web.StreamResponse:
    """The handler for a request whose `Expect` is not 100-continue (continue_if_accepted)."""
    raise ExpectationFailed("the only Expect understood is 100-continue")


def endpoint(
    handler: Handler,
    auth: ClientAuth | None = None,
    *,
    hosts: HostCheck | None = None,
    counted: bool = False,
    dialect: Dialect = OPENAI_CHAT,
    dialect_of: Callable[[web.Request], Dialect] | None = None,
    bodies: BodyRoom | None = None,
) -> Handler:
    """`handler` with request context and error mapping; `auth` when it needs a key,
    `hosts` when it answers only the Hosts and Origins the router serves.

    A `counted` endpoint (the model APIs) logs one `request` event and updates the
    request metrics for every call, bad ones included. Errors are written in `dialect`,
    the shape that endpoint's SDK expects, or in `dialect_of(request)` on a path both
    SDKs call (/v1/models): its 401 and 500 must be read by the SDK that asked. With
    `bodies`, the room its handler took for the request's body (body_room.py) goes back
    when the request ends.
    """
    needs_key = auth is not None and auth.required
    checks_host = hosts is not None and hosts.active

    def dialect_for(request: web.Request) -> Dialect:
        # Asked only on the way to an error: a served request never pays for the choice.
        return dialect if dialect_of is None else dialect_of(request)

    async def handle(request: web.Request) -> web.StreamResponse:
        client_id = request.headers.get(answer_headers.REQUEST_ID, "")
        # An id must be unique, not secret: random's generator (seeded from os.urandom at
        # start, and again in a forked child) makes one without os.urandom's getrandom()
        # syscall, in a third of its time.
        request_id = (
            client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else random.randbytes(16).hex()
        )
        bind_request_id(request_id)
        trace = RequestTrace(request_id, time.perf_counter())  # positional: see Call
        request[REQUEST_TRACE] = trace
        status = 499  # the client went away, unless something below says otherwise
        try:
            try:
                if checks_host:
                    hosts.check(request)  # type: ignore[union-attr]
                if needs_key:
                    auth.check(request)  # type: ignore[union-attr]
                response = await handler(request)
                status = 499 if _client_left(trace) else response.status
            except (asyncio.CancelledError, ConnectionResetError) as exc:
                if (left := walked(exc)) is not None:
                    trace.attempts, trace.waited, trace.skipped = (
                        left.attempts, left.waited, left.skipped
                    )  # fmt: skip
                if trace.delivered:
                    status = 200  # the client left after the stream's end reached it
                elif trace.cut:  # the drain's deadline, not the client: tell it
                    response = await _cut_short(trace, dialect_for(request))
                    status = 503
                    return response
                raise
            except Exception as exc:
                if trace.committed is not None:
                    status = 500
                    return await _fail_stream(trace, request, request_id, dialect_for(request))
                response = _error_response(exc, request, trace, dialect_for(request))
                status = response.status
            if not response.prepared:
                response.headers[answer_headers.REQUEST_ID] = request_id
                if counted and status < 400:
                    # Served once written, as a stream is once its end is (_deliver).
                    written, status = status, 499
                    try:
                        if await _deliver(response, request):
                            status = written
                    except asyncio.CancelledError:
                        if trace.cut:
                            status = 503  # the drain's deadline cut it, not the client
                        raise
                    except Exception:
                        status = 500  # the router could not write it (aiohttp answers)
                        raise
            return response
        finally:
            if trace.body_held and bodies is not None:
                bodies.held -= trace.body_held  # its room back (body_room.py)
            if counted:
                _finish(request, trace, status)

    return handle


async def _deliver(response: web.StreamResponse, request: web.Request) -> bool:
    """Write a whole answer; False if the client's connection went first. It is served
    once all of it has gone to the client's connection (all but the transport's last
    64 KiB handed to the kernel), as a stream is once its end has: a client that leaves
    before, or reads nothing until the send deadline resets it, is charged with it
    (499), its tokens and cost still counted. (A cancellation, the client gone or the
    drain's deadline, goes up to the caller.) Not for an error answer: the connection's
    answer to a broken body says it closes, which it decides as aiohttp writes it
    (client_connection.finish_response)."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        return False  # aiohttp's finish_response finds it gone too, and closes quietly
    return True


async def _fail_stream(
    trace: RequestTrace, request: web.Request, request_id: str, dialect: Dialect
) -> web.StreamResponse:
    """A fault after the stream's head went out: an error event ends it, never a second
    response inside it. Called from the handler's `except`, so the log has the trace."""
    assert trace.committed is not None
    log.exception("unhandled_error_in_stream", path=request.path)
    last = trace.result.watch.last if isinstance(trace.result, OpenStream) else b""
    await trace.committed.fail(dialect.error_event(_internal_message(request_id), last))
    return trace.committed


async def _cut_short(trace: RequestTrace, dialect: Dialect) -> web.StreamResponse:
    """The answer to a request the drain ended (drain.py): a stream gets an error event
    and a clean end, anything else a 503, both in the client's dialect."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # the drain's cancellation is handled here
    error = ShuttingDown(
        "the router is shutting down and server.drain_timeout passed before this request "
        "finished; retry it"
    )
    if trace.committed is not None:
        # Numbered after the last event relayed, as any error event of the stream is.
        last = trace.result.watch.last if isinstance(trace.result, OpenStream) else b""
        await trace.committed.fail(dialect.error_event(error.message, last))
        return trace.committed
    response = error_response(error, trace, dialect)
    response.headers[answer_headers.REQUEST_ID] = trace.request_id
    return response


def _client_left(trace: RequestTrace) -> bool:
    """A stream the client hung up on before its end reached it (a reset the relay saw
    rather than a cancellation): the client left, whatever the status line said."""
    end = trace.stream_end
    return end is not None and end.client_gone


def _error_response(
    exc: Exception, request: web.Request, trace: RequestTrace, dialect: Dialect
) -> web.Response:
    """The client's error answer, when nothing has been sent yet."""
    if isinstance(exc, RouterError):
        response = error_response(exc, trace, dialect)
        if isinstance(exc, _REFUSED_UNREAD) and "Expect" in request.headers:
            # Refused before its 100 Continue (continue_if_accepted): the client may
            # send the body anyway or not at all, so what follows on the connection is
            # no request to read.
            response.force_close()
        return response
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return error_response(_from_http_exception(exc), trace, dialect)
    if isinstance(exc, web.RequestPayloadError | BadHttpMessage):
        # aiohttp's C parser wraps a body's broken framing in a RequestPayloadError; its
        # Python one (AIOHTTP_NO_EXTENSIONS=1, or no wheel) sets its own error as is.
        return _unreadable_body(exc, trace, dialect)
    log.exception("unhandled_error", path=request.path)
    return error_response(InternalError(_internal_message(trace.request_id)), trace, dialect)


def _unreadable_body(
    exc: web.RequestPayloadError | BadHttpMessage, trace: RequestTrace, dialect: Dialect
) -> web.Response:
    """The client's body broke while it was read (gzip that is not, chunks that do not
    add up): the caller's fault, not the router's. (The front door closes the
    connection after this answer: router/front_door.py.)"""
    error = InvalidRequest(f"the request body could not be read: {one_line(exc)}", "invalid_body")
    return error_response(error, trace, dialect)


def not_found(
    known: dict[str, frozenset[str]],
    hosts: HostCheck | None = None,
    *,
    dialect: Dialect = OPENAI_CHAT,
    dialect_of: Callable[[web.Request], Dialect] | None = None,
) -> Handler:
    """The catch-all route: 405 for a known path with the wrong method, else 404, in
    `dialect`'s error shape, or `dialect_of(request)`'s (the SDK that asked)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        # The path as aiohttp's router matched it: an encoded slash (`%2F`) stays
        # encoded, so `/v1%2Fchat%2Fcompletions` is no known path, not a wrong method.
        path = request.rel_url.path_safe
        allowed = known.get(path)
        if allowed is not None:
            methods = ", ".join(sorted(allowed))
            raise PathNotFound(
                f"method {request.method} is not allowed here; use {methods}", 405, methods
            )
        raise PathNotFound(f"no endpoint at {path[:200]}")

    return endpoint(handle, hosts=hosts, dialect=dialect, dialect_of=dialect_of)


def error_response(exc: RouterError, trace: RequestTrace, dialect: Dialect) -> web.Response:
    headers = exc.headers()
    if isinstance(exc, NoCapacity | DeadlineExceeded | OutOfLocalResources):
        trace.attempts = exc.attempts
        trace.waited = exc.waited
        trace.skipped = exc.skipped
    headers[answer_headers.ATTEMPTS] = str(len(trace.attempts))
    return web.json_response(
        dialect.error_body(exc), status=dialect.error_status(exc), headers=headers
    )


def _from_http_exception(exc: web.HTTPException) -> RouterError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge("request body is too large")
    if exc.status in (404, 405):
        return PathNotFound(exc.reason, exc.status, exc.headers.get("Allow", ""))
    error = InvalidRequest(exc.reason, f"http_{exc.status}")  # 417 for an odd Expect, say
    error.status = exc.status
    return error


def _internal_message(request_id: str) -> str:
    return f"internal router error; see the router log for request id {request_id}"


def _finish(request: web.Request, trace: RequestTrace, status: int) -> None:
    seconds = time.perf_counter() - trace.started
    state = request.app[APP_STATE].state
    series = state.metrics.model_series(trace.model or UNKNOWN_MODEL)
    end = trace.stream_end
    outcome = trace.outcome(status, end)
    series.requests[outcome].inc(1)
    if trace.model is not None:
        series.seconds.observe(seconds)
    result = trace.result
    usage = end.usage if end is not None else (result.usage if isinstance(result, Answer) else None)
    cost = result.cost_usd if result is not None else None
    stream = None if end is None else _stream_outcome(end, status, trace.cut)
    attempts = [f"{a.route_id}:{a.failure}" for a in trace.attempts]
    if end is not None and end.verdict.failure is not _OK and attempts:
        # The stream's attempt ended as its stream did, as its metrics count it.
        attempts[-1] = f"{trace.attempts[-1].route_id}:{end.verdict.failure}"
    state.request_log(
        trace.request_id,
        {
            "model": trace.model,
            "route": trace.route,
            "served_by": trace.served_by,
            "status": status,
            # The members themselves: a StrEnum's `.value` is a Python-level descriptor
            # call; JSON and f-strings write a member as its value anyway.
            "outcome": outcome,
            "attempts": attempts,
            "skipped": list(trace.skipped) if trace.skipped else None,
            "stream": stream,
            # round(x * 100_000) / 100 is round(x * 1000, 2) without its decimal
            # conversion, which cost more than the rest of a field.
            "latency_ms": round(seconds * 100_000) / 100,
            "ttft_ms": None if trace.ttft is None else round(trace.ttft * 100_000) / 100,
            "waited_ms": None if trace.waited is None else round(trace.waited * 100_000) / 100,
            "tokens_in": usage.input_tokens if usage else None,
            "tokens_out": usage.output_tokens if usage else None,
            # Of tokens_in: read from the provider's prompt cache, and written to it.
            "tokens_cached": usage.cached_tokens if usage else None,
            "tokens_cache_written": usage.written_tokens if usage else None,
            "cost_usd": None if cost is None else round(cost * 1e8) / 1e8,
        },
    )
    if state.tracing is not None:  # off by default: this check is all it costs then
        facts = request_facts(
            request, trace, state, status=status, outcome=outcome.value, stream_end=stream,
            usage=usage, cost_usd=cost,
        )  # fmt: skip
        state.tracing.record(facts)


def _stream_outcome(end: StreamEnd, status: int, cut: bool) -> str:
    if cut and status == 503:
        return "shutdown"  # the drain's deadline ended it (drain.py)
    if status == 500:
        return "router_error"  # the router failed it, not the upstream or the client
    return "client_gone" if end.client_gone else end.verdict.failure.value


def _presented_token(request: web.Request) -> str:
    """Bearer (SDKs), x-api-key (Anthropic-style clients) or HTTP Basic with the key as
    the password (a browser opening /admin).

    Basic only for reading (GET, HEAD): a browser that saved the password sends it again
    by itself, on a form any other site posts to the router too (cross-site request
    forgery: spending the keys, a reload), and a cross-site read gets no answer it may
    see. Bearer and x-api-key are never sent by a browser of its own accord."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and token:
        return token.strip()
    if scheme == "basic" and token and request.method in _READING:
        try:
            return base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return request.headers.get("x-api-key", "")
