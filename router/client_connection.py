"""One client connection: how long it may take over a request's head and body, and what
it does with a body its answer left unread or whose framing broke.

aiohttp's own `keepalive_timeout` closes a connection that sits idle (no request begun)
that long after it opened or after its last response. What it lacks is added here, on
its connection class (front_door.py adds the cap on open connections):

- a send deadline (send_deadline.py, the layer under this one);
- read deadlines: a request head must be complete within its timeout of its first byte
  (not reset by each new byte, so a client that sends one header byte every few seconds,
  slowloris, is closed when it expires; while a head arrives this timer replaces the
  idle one), and a request body that is still due may not go longer than its timeout
  without a byte (nginx's client_body_timeout), so a head with a Content-Length and no
  body cannot hold a connection, and its handler, forever;
- a bound on a request head's bytes (`max_head`): aiohttp bounds each line and the
  number of fields (128 of 8 KiB, so a head may hold a megabyte, twice that once
  parsed, on each of a thousand connections), not their sum, as nginx's
  large_client_header_buffers and Envoy's max_request_headers_kb do; past it the
  client gets a 431 in its dialect;
- a request aiohttp's parser refuses gets a JSON 400 that does not echo its bytes
  (refused_heads.py answers both); after either, and after a body that broke (its
  framing, its content, chunks too small), what the client still sends is dropped
  unparsed until it pauses, so that it reads the answer, not a reset;
- a compressed body an early answer left unread is dropped raw, not inflated.

`Connection` reaches into seven attributes of aiohttp's `RequestHandler` (`_waiter`: the
future it awaits between requests; the queue of parsed requests `_messages`, whose
refusals are `_ErrInfo`s; `_keepalive_handle`; `_request_in_progress`; `_close` and
`_force_close`; `_current_request`, the request its handler
is serving, which the drain at shutdown reads), `BaseRequest._payload` (a request's
body reader, read without its reified `content`) and that reader's `_exception` (a
broken body's error, cleared once answered so that aiohttp lingers over it); tests
through real sockets (tests/integration/test_front_door.py, test_chunked_bodies.py,
and both again on aiohttp's Python parser) notice if a new aiohttp moves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from router import refused_heads
from router.errors import one_line
from router.refused_heads import HeadTooLarge
from router.send_deadline import SendDeadlineHandler

log = structlog.get_logger("router.front_door")

_ENCODING, _IDENTITY = "Content-Encoding", "identity"


# After a head too large, what the client still sends is dropped until it pauses this
# long (nginx's lingering_timeout), or for lingering_time in all.
_LINGER_QUIET = 5.0
# A chunked request body may come in this many chunks, and past that in chunks of this
# many bytes on average.
_FREE_CHUNKS, _MIN_CHUNK = 4096, 128
_FRAMED = _FREE_CHUNKS * 5  # bytes: a chunk's framing is 5 at least (`1\r\n`, `\r\n`)


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds: `head` from a request head's first byte to its end; `body` without a
    byte while a request body is still due (nginx's client_body_timeout); `send` with
    the answer's bytes piling up unread (nginx's send_timeout)."""

    head: float
    body: float
    send: float


class Door(Protocol):
    """What a connection tells the server that made it (front_door.FrontDoor)."""

    def used(self, handler: RequestHandler) -> None: ...


class Connection(SendDeadlineHandler):
    """aiohttp's connection handler plus read deadlines for a request's head and body,
    and (its base) a send deadline for its answer."""

    __slots__ = (
        "_body",
        "_broken",
        "_chunks",
        "_crlfs",
        "_deadline",
        "_discard",
        "_door",
        "_head_bytes",
        "_head_start",
        "_head_waiter",
        "_max_head",
        "_reading",
        "_timer",
    )

    def __init__(
        self, manager: Door, *, reading: ClientTimeouts, max_head: int, **kwargs: Any
    ) -> None:
        super().__init__(manager, send=reading.send, **kwargs)
        self._door = manager
        self._reading = reading
        self._max_head = max_head
        self._head_bytes = 0  # of the head being received, in reads that did not end it
        self._head_start = b""  # its first bytes, for its target
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._head_waiter: asyncio.Future[None] | None = None  # the head being timed
        self._body: StreamReader | None = None  # the body being timed
        self._chunks = 0  # chunks of it since its head's read, when it is chunked
        self._crlfs = -1  # CRLFs of it since then; -1: it is not compressed
        self._broken: StreamReader | None = None  # a body that broke: its answer closes
        # What arrives is dropped unparsed: a compressed body left unread by its answer
        # (`_drop_rest`), or all that follows a head too large (`_refuse_head`). Its
        # reader, and the raw bytes still due (None: not known, chunked or refused).
        self._discard: tuple[StreamReader, int | None] | None = None

    @property
    def serving(self) -> bool:
        """A request is being handled, or one has fully arrived and waits its turn."""
        return self._request_in_progress or bool(self._messages)

    def data_received(self, data: bytes) -> None:
        if self._discard is not None:
            self._dropped(len(data))
            return
        queued = len(self._messages)
        body = self._body
        noted = len(body._http_chunk_splits or ()) if body is not None else 0
        super().data_received(data)
        if self._head_over(data, queued, body is not None):
            return
        # A read under `_FRAMED` bytes cannot hold more than `_FREE_CHUNKS` new chunks.
        if (body is not None or len(data) > _FRAMED) and self._too_many_chunks(
            body, data, noted, queued
        ):
            return
        refeed = body is not None and body.is_eof() and self._body_ended(body)
        waiter = self._waiter  # pending: between requests, no complete head yet
        if self._body is not None and self._broke_body(queued):
            pass  # the body being read broke: ended, and timed no more
        elif len(self._messages) > queued:  # a head is complete
            self._door.used(self)
            self._head_waiter = None
            message, payload = self._messages[-1]
            self._body = None if payload.is_eof() else payload
            if self._body is not None:
                # Chunks counted from its next read (this one's: _too_many_chunks); those
                # of a compressed body by their framing.
                self._chunks = 0
                self._crlfs = 0 if message.chunked and message.compression else -1
            # Its content may have broken in this very read (gzip that is not).
            if self._body is not None and not self._broke_body(len(self._messages)):
                self._arm(self._loop.time() + self._reading.body)
        elif self._body is not None:
            if self._body.is_eof():
                self._body = None
            elif data:  # progress: the timer catches up when it fires
                self._deadline = self._loop.time() + self._reading.body
        elif data and waiter is not None and not waiter.done() and self._head_waiter is not waiter:
            self._head_waiter = waiter  # the first bytes of a head
            self._arm(self._loop.time() + self._reading.head)
            # The idle timer stops counting once a request has begun: this one rules.
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None
        if self._body is None and self._head_waiter is None:
            self._disarm()
        if refeed and not (self._buffer_paused or self._close or self._force_close):
            # The parser may have stopped on a count that was one too high, the rest of
            # this read kept in its tail: it parses that now, as aiohttp would once the
            # queue drained, which it does not wait for here.
            self.data_received(b"")

    def _head_over(self, data: bytes, queued: int, in_body: bool) -> bool:
        """Whether a request head was refused with this read: by aiohttp's parser (its
        error is queued, a 400), or by growing past `max_head` (a 431 takes its place
        in the queue). Either way the connection lingers (`_linger`). A head that ended
        in this read is measured only when the read and the head's earlier reads are
        over the limit together, so a plain request costs a comparison. Bytes of a head
        that began in the read that ended the request before it are not counted:
        pipelined, a head can pass the limit by one read."""
        messages = self._messages
        if len(messages) > queued:  # heads ended in this read (none while closing)
            last = messages[-1][0]
            # A body's breaks are _broke_body's; a bad head after a body that ended, not.
            if type(last) is _ErrInfo and not (in_body and not self._body.is_eof()):  # type: ignore[union-attr]
                messages[-1] = (last, self._linger())
                return True
            counted = self._head_bytes + len(data)
            self._head_bytes = 0
            if counted <= self._max_head:
                return False
            for at in range(queued, len(messages)):
                message = messages[at][0]
                if isinstance(message, RawRequestMessage):
                    size = refused_heads.head_size(message)
                    if size > self._max_head:
                        while len(messages) > at:  # it, and what came after it
                            messages.pop()
                        self._refuse_head(size, message.path.encode("utf-8", "replace"))
                        return True
            return False
        if in_body or not data or self._force_close or self._close:
            return False
        if not self._head_bytes:
            self._head_start = data[: refused_heads.TARGET_PEEK]
        self._head_bytes += len(data)
        if self._head_bytes <= self._max_head:
            return False
        self._refuse_head(self._head_bytes, refused_heads.target_of(self._head_start))
        return True

    def _refuse_head(self, size: int, target: bytes) -> None:
        """Queue a 431 for a head of `size` bytes, and linger."""
        log.info("request_head_too_large", bytes=size, limit=self._max_head)
        error = HeadTooLarge(size, self._max_head, target)
        refusal = _ErrInfo(status=431, exc=error, message=error.message)
        self._messages.append((refusal, self._linger()))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _linger(self) -> StreamReader:
        """After a refused head: parse nothing more. What the client still sends is
        dropped as it comes (nginx's lingering close, so that a client still sending,
        as the SDKs send a whole request before they read, reads its error rather than
        a reset) until it pauses `_LINGER_QUIET` seconds, for lingering_time at most, as
        a request's unread body would be. The reader returned, never fed, is the
        refusal's body, which aiohttp lingers over once the refusal is answered."""
        payload = StreamReader(self, 2**16, loop=self._loop)
        self._discard = (payload, None)
        # Nothing is parsed again: the head it holds (up to the limit and a read, twice
        # over once parsed) goes now, not when the lingering ends.
        self._parser = None
        self._head_bytes, self._head_start = 0, b""
        self._head_waiter = self._body = None
        self._linger_over(payload)
        return payload

    def _linger_over(self, payload: StreamReader) -> None:
        """aiohttp lingers over `payload` once its request is answered: it reads until
        the reader ends, which `_quiet` has it do once the client pauses. A broken
        body's error has been raised to its handler by now; it is cleared, or the
        lingering would end on it at once."""
        payload._exception = None
        self._disarm()
        self._deadline = self._loop.time() + _LINGER_QUIET
        self._timer = self._loop.call_at(self._deadline, self._quiet)

    def _too_many_chunks(
        self, body: StreamReader | None, data: bytes, noted: int, queued: int
    ) -> bool:
        """Whether a chunked body came in too many chunks for its size with this read
        (`_chunks_too_small`): the body being read, or one begun in this read (only a
        read over `_FRAMED` bytes can hold too many). The body being read has its
        chunks counted from the read after its head's: each chunk that adds to it is
        an entry in its `_http_chunk_splits` (`noted` of them before this read's
        parse), which its reader drops only as it reads, never during a parse. A
        compressed body's chunks may inflate to nothing and add nothing, so its are
        counted as they arrive, two CRLFs each (its size line's and its data's;
        compressed bytes hold few CRLFs of their own). A body begun in a read is
        judged there by the chunks noted (a compressed one by the read's CRLFs), so
        one begun in a large read may have twice the chunks allowed."""
        if body is not None and body._http_chunk_splits is not None:
            self._chunks += len(body._http_chunk_splits) - noted
        if body is not None and self._crlfs >= 0:
            self._crlfs += data.count(b"\r\n")
            self._chunks = max(self._chunks, self._crlfs // 2)
        chunks = self._chunks
        if body is not None and chunks > _FREE_CHUNKS and chunks * _MIN_CHUNK > body.total_bytes:
            self._chunks_too_small(body, chunks)
            return True
        messages = self._messages
        for at in range(queued, len(messages)):  # bodies begun in this read
            message, payload = messages[at]
            splits = getattr(payload, "_http_chunk_splits", None)  # not on an empty one
            count = len(splits) if splits is not None else 0
            if getattr(message, "chunked", False) and getattr(message, "compression", None):
                count = max(count, data.count(b"\r\n") // 2)  # the whole read's
            if count > _FREE_CHUNKS and count * _MIN_CHUNK > payload.total_bytes:
                self._chunks_too_small(payload, count)
                return True
        return False

    def _body_ended(self, body: StreamReader) -> bool:
        """A request body came to its end in this read. aiohttp's parser counts a request
        as queued once its body has ended, and its handler loop frees the slot when it
        takes the request, which it does at the head (a slot that was not counted yet is
        not freed). So each request whose body came after its handler took it left the
        count one higher, for good: after a few, requests pipelined behind them stalled
        once the parser thought its 32 slots full (31 of 40 pipelined answered after
        three bodies sent apart from their heads; aiohttp's own body read feeds its
        parser again, which the router's `arrived()` skips). The slot is freed here
        instead (a count one low only lets one more request queue); True if it was, and
        the caller has the parser go on (`data_received`)."""
        if any(payload is body for _, payload in self._messages):
            return False  # not taken yet: the handler loop frees its slot when it takes it
        consumed = getattr(self._parser, "message_consumed", None)
        if consumed is None:
            return False
        consumed()
        return True

    def _chunks_too_small(self, body: StreamReader, chunks: int) -> None:
        """A chunked body whose chunks are too many for its size: the body breaks (a 400
        `invalid_body` to the handler reading it, as a broken chunked framing is), and
        nothing more is parsed on this connection, which closes after the answer. Each
        chunk costs aiohttp a few microseconds of the loop, whatever its size: a body
        in one-byte chunks cost over a second of CPU a megabyte, in stalls of up to
        300 ms for every other request."""
        log.info("request_chunks_too_small", chunks=chunks, bytes=body.total_bytes)
        body.set_exception(
            web.RequestPayloadError(
                f"its chunks are too small: {chunks} chunks for {body.total_bytes} "
                f"bytes (past {_FREE_CHUNKS} chunks, {_MIN_CHUNK} bytes a chunk at least)"
            )
        )
        self._body = None
        self._disarm()
        if self._request_in_progress or any(payload is body for _, payload in self._messages):
            self._hold_broken(body)
        else:
            body.feed_eof()
            self._discard = (body, None)  # what still comes is dropped, not parsed
            self.close()  # aiohttp was reading it out after an early answer

    def _broke_body(self, queued: int) -> bool:
        """Whether the bytes just parsed broke the body being read.

        Two ways: its content (gzip that is not), which aiohttp's parser sets on the
        body as an error; or its framing (a bad chunk size), which aiohttp queues as a
        new request, an error its own handler answers, leaving the handler the body
        belongs to waiting for the rest of it for good. Either way the parser reads
        nothing more on this connection. A handler that still reads the body gets the
        error (to answer 400 in the client's dialect), what the client still sends is
        dropped (`_hold_broken`), and the answer to its request closes the connection
        once the client pauses (`finish_response`); requests queued before it are
        served first. A body no handler waits for any more (aiohttp reading out what a
        handler left unread) just ends, and the connection closes."""
        body = self._body
        assert body is not None
        messages = self._messages
        refused = len(messages) > queued and getattr(messages[-1][0], "exc", None)
        if body.is_eof() or not (refused or body.exception() is not None):
            return False
        if refused:
            messages.pop()  # no answer of its own: the body's request answers for it
        self._body = None
        queued = any(payload is body for _, payload in messages)
        if not (queued or self._request_in_progress):
            body.feed_eof()  # lingering ends (an error raised there is logged as info)
            self.close()
            return True
        if refused:
            reason = refused_heads.reason(refused)
            body.set_exception(web.RequestPayloadError(f"the body's framing is broken: {reason}"))
        self._hold_broken(body)
        if not queued:
            # Its request is the one being handled: nothing was read after it, so no
            # request is dropped, and the connection closes even if its answer is
            # already on its way (too late for finish_response to say so).
            self.close()
        return True

    def _hold_broken(self, body: StreamReader) -> None:
        """A body that broke, which a handler reads (or will): it raises the error set
        on it there. What the client still sends is dropped unparsed, and the body is
        left open, for aiohttp to linger over once its request is answered
        (`finish_response` arms `_quiet`, which ends it), so that a client still
        sending reads its 400 rather than a reset."""
        self._broken = body
        self._discard = (body, None)

    def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Awaitable[tuple[web.StreamResponse, bool]]:
        # Not a coroutine: aiohttp's is returned for the caller to await, one frame less.
        if self._broken is not None and request._payload is self._broken:
            self._broken = None
            resp.force_close()  # `Connection: close`: nothing after the break can be read
            self._linger_over(request._payload)
        # `_payload`, not `content`: a reified property, whose first read on a request
        # adds it to the request's cache (a dict insert, and a resize) on every request.
        elif (
            not request._payload.is_eof() and request.headers.get(_ENCODING, _IDENTITY) != _IDENTITY
        ):
            self._drop_rest(request, resp)
        return super().finish_response(request, resp, start_time)

    def _drop_rest(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        """An answer left a compressed body unread (an early 413, 401 or 404). aiohttp
        would read it out through its parser, which inflates it: a megabyte of gzip is a
        gigabyte to inflate, seconds of the event loop. Its raw bytes are counted and
        dropped instead (nginx's lingering close does not inflate either), and the
        connection closes once the body's length has come, the client closes, or
        lingering_time or body_timeout runs out."""
        resp.force_close()  # nothing after the dropped body can be read
        payload = request._payload
        length = request.content_length
        if length is not None:
            length -= getattr(payload, "total_compressed_bytes", None) or 0
        self._discard = (payload, length)
        if length is not None and length <= 0:
            self._dropped(0)

    def _dropped(self, size: int) -> None:
        assert self._discard is not None
        payload, left = self._discard
        if self._body is not None:
            self._deadline = self._loop.time() + self._reading.body  # progress
        elif left is None:
            self._deadline = self._loop.time() + _LINGER_QUIET  # after a refused head
        if left is None:
            return
        left -= size
        self._discard = (payload, left)
        if left <= 0:
            payload.feed_eof()  # aiohttp's read-out ends, and the connection closes

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # A body the client broke (RequestPayloadError) that aiohttp meets again while it
        # reads out what a handler left: the client's fault, one line at info level.
        error = kwargs.get("exc_info")
        # The C parser wraps a broken framing in a RequestPayloadError; the Python parser
        # (AIOHTTP_NO_EXTENSIONS=1, or no wheel) raises its own, a BadHttpMessage.
        if isinstance(error, web.RequestPayloadError | BadHttpMessage):
            log.info("bad_request_body", reason=one_line(error))
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp's parser refused (a bad head, a broken body framing): a JSON
        400 in OpenAI's shape (the path, and so the dialect, may be unknown) that does
        not echo the offending bytes, and one log line at info level, as nginx logs a
        client's bad request; not a traceback at error level per request any client
        can send. Other errors stay aiohttp's."""
        if isinstance(exc, HeadTooLarge):
            return refused_heads.too_large(exc)
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = refused_heads.reason(exc)
        noise = self._request_count == 1 and isinstance(exc, BadHttpMethod)  # not HTTP
        (log.debug if noise else log.info)("bad_http_request", reason=reason)
        return refused_heads.malformed(reason)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._body = self._head_waiter = None
        super().connection_lost(exc)

    def _quiet(self) -> None:
        """After a refused head: the client has sent nothing for `_LINGER_QUIET`
        seconds. The reader aiohttp lingers over ends, and the connection closes."""
        self._timer = None
        if self._discard is None:
            return
        reader = self._discard[0]
        if any(payload is reader for _, payload in self._messages):
            self._deadline = self._loop.time() + _LINGER_QUIET  # not answered yet
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._quiet)
            return
        reader.feed_eof()

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        if self._timer is None or self._timer.when() > deadline:
            self._disarm()
            self._timer = self._loop.call_at(deadline, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._body is not None and self._body.is_eof():
            self._body = None
        head = self._head_waiter
        if head is not None and (head is not self._waiter or head.done()):
            self._head_waiter = head = None
        if self._body is None and head is None:
            return
        if self._loop.time() < self._deadline:  # bytes came since: wait for the new deadline
            self._timer = self._loop.call_at(self._deadline, self._expired)
            return
        log.debug("request_read_timeout", phase="head" if head is not None else "body")
        self.force_close()
