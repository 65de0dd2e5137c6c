"""One keep-alive HTTP/1.1 connection to a provider; the response being read off it is
response.py's.

httptools (llhttp, the parser uvicorn serves with) does the parsing: status, headers,
chunked framing, keep-alive (a head's fields are read off its bytes once llhttp has
accepted them, in one regex pass rather than a Python call per field). What is left here
is the part a proxy needs: body pieces go to the response as each read is parsed,
reading pauses when the relay falls behind (the response asks), and the connection goes
back to its pool only when its response was read to the end and nothing else came after
it.

Tuned: every choice here was measured with `bench/cpu.py` (README "Performance").
Change it with a before/after figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable
from typing import cast

import httptools

from router.types import Limits
from router.upstream.http_errors import (
    BadResponse,
    HttpError,
    TooLarge,
)
from router.upstream.response import Response

# A field of a head llhttp accepted: after a CRLF, the name up to the first colon, then
# the value without the spaces and tabs before it (llhttp keeps those after it).
_FIELD = re.compile(r"\r\n([^:]+):[ \t]*([^\r]*)")


class Connection(asyncio.Protocol):
    """A transport, its parser, and the one response it is reading (or none: idle).

    Once a response is complete the connection owes nothing more: any byte after it
    (a second answer nobody asked for, a stray head) means it cannot be trusted with
    another request, so it is closed and the finished response is left as it was.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        on_idle: Callable[[Connection], None],
        on_lost: Callable[[Connection], None],
    ) -> None:
        self.loop = loop
        self._limits = limits
        self._head_bytes = 0  # read for the current response before its head was whole
        self._on_idle = on_idle
        self._on_lost = on_lost
        # The parser hands each body chunk straight to this list's append (it looks its
        # callbacks up once, when made): no Python call per chunk of a chunked body. The
        # chunks of a read go to the response in one call, after the read is parsed.
        self._body: list[bytes] = []
        self.on_body: Callable[[bytes], None] = self._body.append
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._paused = False
        self._interim = False  # a 1xx head was parsed: its message end is not the response's
        # The parser validates the head; its fields are then read off the head's bytes in
        # one regex pass, rather than through a Python call per field (`on_header`, which this
        # class does not have): a provider's head has twenty or more. `_head` holds the
        # bytes being parsed while the head is not whole: the read, after what earlier
        # reads left (`_held`); `_head_at` is where the current head starts in it (past
        # interim heads).
        self._head: bytes | bytearray = b""
        self._held = bytearray()
        self._head_at = 0
        self._headers_left = limits.max_headers  # interim heads' fields count too
        self._finished = False  # the response is complete: nothing more may arrive
        self._extra = False  # bytes came after it
        self.closed = False
        self.idle_since = 0.0
        # Seconds it may sit idle and still be used: the server's own keep-alive time,
        # when its `Keep-Alive: timeout=N` says it (less a second), else the pool's.
        self.keep_for = math.inf

    def usable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    def send(self, data: list[bytes]) -> Response:
        """Write a whole request; the response is read into what is returned."""
        assert self._transport is not None and self._response is None
        self._response = response = Response(self, self._limits)
        self._finished = self._extra = False
        self._head_bytes = 0
        self._held.clear()
        self._headers_left = self._limits.max_headers
        self._transport.writelines(data)
        return response

    def idle(self) -> None:
        self._response = None
        self.resume()
        self.idle_since = self.loop.time()
        self._on_idle(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()

    def pause(self) -> None:
        if not self._paused and self._transport is not None and not self.closed:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or self._finished:
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        try:
            if response.head_done:
                self._parser.feed_data(data)
            else:
                self._feed_head(response, data)
            if self._body:
                self._hand_over_body()
        except TooLarge as exc:
            self.close()
            response.set_exception(exc)
            return
        except Exception as exc:  # a parser error, or one our callbacks raised
            self.close()
            if not self._finished:
                if self._body:
                    with contextlib.suppress(HttpError):
                        self._hand_over_body()  # the chunks parsed before the error
                # httptools re-raises a callback's error as context
                raised = exc if isinstance(exc, HttpError) else exc.__context__
                if isinstance(raised, HttpError):
                    response.set_exception(raised)
                else:
                    response.set_exception(BadResponse(f"malformed response: {exc!r}"))
            return
        if self._finished and self._extra:
            self.close()

    def _feed_head(self, response: Response, data: bytes) -> None:
        """Parse a read that holds (the start of) the head."""
        held = self._held
        if held:
            held += data  # a head in several reads: kept in place, not copied per read
            self._head = held
        else:
            self._head = data
        self._head_at = 0
        try:
            self._parser.feed_data(data)
        finally:
            self._head = b""
        if not response.head_done:
            # Every byte so far was head (interim heads' too): the limit is checked
            # per read, so a field that never ends is refused while it arrives.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_head_bytes:
                raise TooLarge(f"response head larger than {self._limits.max_head_bytes} bytes")
            if held:
                del held[: self._head_at]  # the interim heads parsed
            else:
                held += data[self._head_at :]
        elif held:
            held.clear()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost says what that means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        if self._response is not None and not self._finished:
            self._response.on_lost(exc)

    # httptools callbacks; after the response is complete, only noted as extra bytes.

    def on_message_begin(self) -> None:
        if self._finished:
            self._extra = True

    def on_headers_complete(self) -> None:
        if self._response is not None and not self._finished:
            # The parser took the head: its lines end in CRLF, none is folded, and no
            # value holds a CR or LF, so the first empty line ends it.
            start = self._head_at
            end = self._head.index(b"\r\n\r\n", start)
            self._head_at = end + 4
            if end - start > self._limits.max_head_bytes:
                raise TooLarge(f"response head larger than {self._limits.max_head_bytes} bytes")
            # Names are tokens (ASCII); values are UTF-8, and a byte that is not is kept
            # as a surrogate escape, as aiohttp keeps it. CR, LF and ":" are ASCII, so
            # decoding the whole head decodes each name and value as on its own.
            head = self._head[start:end].decode("utf-8", "surrogateescape")
            # A CRLF ends the status line and each field but the last: one per field.
            self._headers_left -= head.count("\r\n")
            if self._headers_left < 0:
                raise TooLarge(f"more than {self._limits.max_headers} header fields")
            parser = self._parser
            status = parser.get_status_code()
            if 100 <= status < 200:  # 100 Continue and the like: the real head follows
                if status == 101:
                    raise BadResponse("the server switched protocols (101), unasked")
                self._interim = True
                return
            self._response.on_headers_complete(
                status, parser.should_keep_alive(), _FIELD.findall(head)
            )

    def _hand_over_body(self) -> None:
        """The body chunks parsed so far go to the response; after it is complete they
        are extra bytes, dropped (the connection is closed for them)."""
        chunks = self._body
        try:
            if self._response is not None and not self._finished:
                self._response.on_body(chunks)
        finally:
            chunks.clear()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self._response is not None and not self._finished:
            if self._body:
                self._hand_over_body()
            self._finished = True
            self._response.on_message_complete()
