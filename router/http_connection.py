"""One keep-alive HTTP/1.1 connection to a provider, and the response being read off it.

httptools (llhttp, the parser uvicorn serves with) does the parsing: status, headers,
chunked framing, keep-alive. What is left here is the part a proxy needs: the body
arrives as pieces to relay as they come, reading pauses when the client falls behind,
a read can be failed from outside (the router's own deadlines do that), and the
connection goes back to its pool only when its response was read to the end.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

# Reading from the provider pauses above this many unread body bytes, and goes on
# once the relay has taken them (aiohttp's StreamReader pauses at 128 KiB).
_HIGH_WATER = 1 << 17


class HttpError(Exception):
    """The connection or the response failed; the subclasses say how."""


class Disconnected(HttpError):
    """The connection closed before a whole response head came back."""

    def __init__(self, message: str, *, anything_received: bool) -> None:
        super().__init__(message)
        self.anything_received = anything_received


class BrokenBody(HttpError):
    """The connection closed, or the body could not be decoded, part way through."""


class BadResponse(HttpError):
    """What came back is not HTTP/1.1 this client can read."""


class Response:
    """A response whose head is in (once `head()` returned); its body is read here."""

    __slots__ = (
        "_complete",
        "_connection",
        "_decoder",
        "_exception",
        "_head_done",
        "_pending",
        "_raw_headers",
        "_size",
        "_waiter",
        "headers",
        "keep_alive",
        "received",
        "status",
    )

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._pending: deque[bytes] = deque()
        self._size = 0
        self.received = False  # any byte of it: a connection lost before that can be redone
        self._head_done = False
        self._complete = False
        self._decoder: zlib._Decompress | None = None
        self._exception: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.keep_alive = False
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())

    async def head(self) -> None:
        """Wait until the status and headers are in."""
        while not self._head_done:
            if self._exception is not None:
                raise self._exception
            await self._wait()

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last read, at least one; b"" at the end."""
        while not self._pending:
            if self._exception is not None:
                raise self._exception
            if self._complete:
                return b""
            await self._wait()
        pending = self._pending
        data = pending.popleft() if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        self._connection.resume()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        while not self._complete:
            if self._exception is not None:
                raise self._exception
            await self._wait()
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        return data

    def at_eof(self) -> bool:
        """Whether the body is complete and all of it has been read."""
        return self._complete and not self._pending

    def set_exception(self, exc: BaseException) -> None:
        """Fail the read that waits now, and every later one."""
        self._exception = exc
        self._wake()

    def release(self) -> None:
        """Done with the response: the connection goes back to its pool if it can be
        used again (the body read to the end, keep-alive), and is closed otherwise."""
        if self.at_eof() and self.keep_alive and self._exception is None:
            self._connection.idle()
        else:
            self._connection.close()

    def close(self) -> None:
        self._connection.close()

    async def _wait(self) -> None:
        waiter = self._waiter = self._connection.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # What the connection's parser reports.

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def interim(self) -> None:
        self._raw_headers = []

    def on_headers_complete(self, status: int, keep_alive: bool) -> None:
        headers: CIMultiDict[str] = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw_headers
        )
        self._raw_headers = []
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate"):
            # wbits 47: gzip or zlib framing, told apart by the header (deflate is zlib).
            self._decoder = zlib.decompressobj(47)
        elif encoding != "identity":
            self.set_exception(BadResponse(f"unsupported content-encoding {encoding!r}"))
            return
        self.status = status
        self.keep_alive = keep_alive
        self.headers = CIMultiDictProxy(headers)
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self.set_exception(BrokenBody(f"cannot decompress the body: {exc}"))
                return
            if not body:
                return
        self._pending.append(body)
        self._size += len(body)
        if self._size > _HIGH_WATER:
            self._connection.pause()
        self._wake()

    def on_message_complete(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._pending.append(tail)
        self._complete = True
        self._wake()

    def on_lost(self, exc: BaseException | None, *, until_eof: bool) -> None:
        """The connection closed. A body delimited by the close is complete now."""
        if self._complete or self._exception is not None:
            return
        if self._head_done and until_eof:
            self.on_message_complete()
            return
        reason = f": {exc}" if exc is not None else ""
        if not self._head_done:
            self.set_exception(
                Disconnected(
                    f"the server closed the connection before answering{reason}",
                    anything_received=self.received,
                )
            )
        else:
            self.set_exception(BrokenBody(f"the connection closed inside the body{reason}"))


class Connection(asyncio.Protocol):
    """A transport, its parser, and the one response it is reading (or none: idle)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_idle: Callable[[Connection], None],
        on_lost: Callable[[Connection], None],
    ) -> None:
        self.loop = loop
        self._on_idle = on_idle
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._paused = False
        self._length_known = False  # the response has Content-Length or chunked framing
        self._interim = False  # a 1xx head was parsed: its message end is not the response's
        self.closed = False
        self.idle_since = 0.0
        self.reused = False

    def send(self, data: list[bytes]) -> Response:
        """Write a whole request; the response is read into what is returned."""
        assert self._transport is not None and self._response is None
        self._response = response = Response(self)
        self._length_known = False
        self._transport.writelines(data)
        return response

    def idle(self) -> None:
        self._response = None
        self.reused = True
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
        if response is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        response.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.set_exception(BadResponse(f"malformed response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost says what that means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        if self._response is not None:
            self._response.on_lost(exc, until_eof=not self._length_known)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._length_known = True
            self._response.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._response is not None:
            parser = self._parser
            status = parser.get_status_code()
            if 100 <= status < 200:  # 100 Continue and the like: the real head follows
                self._interim = True
                self._length_known = False
                self._response.interim()
                return
            self._response.on_headers_complete(status, parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.on_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self._response is not None:
            self._response.on_message_complete()
