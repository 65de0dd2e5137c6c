"""The client's side of a stream: its head, then its pieces, straight to the transport.

After `prepare()` the status line is sent: a failure from then on, whatever raised it,
can only end the stream, with an error event in the client's dialect and a clean end of
the body. Returning a new response would make aiohttp write a second HTTP head inside
the chunked body, which no client can read. `ClientStream` knows whether its end has
been written, so that whoever handles the failure ends it at most once.

Its head waits for the first write, as a `web.Response`'s does, and goes out with the
first events in one write: a stream is committed only once its first content event is
in hand, so the head would be a write (a syscall, a TCP segment, a wake-up of the
client) of its own for nothing.

The router's own streams (`ClientStream.sse`) have a head of five known lines: it is
written as bytes, not built by aiohttp's prepare() (its general cases: cookies,
compression, HTTP/1.0, empty bodies, hooks, then a serialisation of a header dict);
with the end written the same way, that saved about 24,000 instructions a short stream
(3.6%, bench/instructions.py --stream). The bytes are the ones aiohttp writes for the
same headers, and aiohttp's state (the writer's head still to send, the response's
keep-alive and end) is set as its prepare() sets it; any case but the plain one
(HTTP/1.0, not a POST, compression, a hook, an unknown writer) goes through aiohttp.
tests/integration/test_client_stream.py compares the two heads byte for byte.

After that, each piece goes straight to the transport as one HTTP chunk, which is what
aiohttp's writer does with it too, past its four calls per piece (type checks, the
compression and length cases, the head still to send): they were about 4,000
instructions of every event a stream relays (bench/instructions.py --stream-words).
The end goes the same way. Only a plain chunked writer is written to that way (an
HTTP/1.0 client, a compressed or counted body goes through aiohttp), and it is drained
as aiohttp drains it.
"""

from __future__ import annotations

import contextlib
import functools
import re

from aiohttp import ClientConnectionResetError, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_writer import StreamWriter

from router.handlers import answer_headers, response_head
from router.handlers.response_head import DRAIN_PAST, take_head

# aiohttp's rule for a header (http_writer._safe_header): no control character but tab.
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SERVER = SERVER_SOFTWARE.encode()
# The router's header lines (the route's is added when there is one); the head is the
# status line, those lines, then aiohttp's own, in the order it adds them.
_LINES = (
    b"Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n%b: %%b\r\n%b: %%d\r\n%%b"
    % (answer_headers.REQUEST_ID.encode(), answer_headers.ATTEMPTS.encode())
)
_ROUTE_LINE = answer_headers.ROUTE.encode() + b": %b\r\n"
_HEAD = b"HTTP/1.1 200 OK\r\n%bTransfer-Encoding: chunked\r\nDate: %b\r\nServer: %b\r\n%b\r\n"


@functools.lru_cache(maxsize=4096)
def _route_line(route_id: str) -> bytes | None:
    """The route's header line; None for an id no header may hold (aiohttp refuses it)."""
    if _UNSAFE.search(route_id):
        return None
    return _ROUTE_LINE % route_id.encode()


class ClientStream(web.StreamResponse):
    """An SSE response that records when its end is written."""

    ended = False  # write_eof was called (even if the client had gone by then)
    # aiohttp >= 3.12 (web.Response sets it too); on an older one the head goes out at
    # prepare(), which changes nothing but the count of writes.
    _send_headers_immediately = False
    _direct: StreamWriter | None = None  # once prepared: pieces go straight to it
    _lines: bytes | None = None  # the head's header lines, ready; None: aiohttp's prepare

    @classmethod
    def sse(cls, request_id: str, route_id: str | None, attempts: int) -> ClientStream:
        """The router's event stream, with its request id and its routing headers."""
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            answer_headers.REQUEST_ID: request_id,
            answer_headers.ATTEMPTS: str(attempts),
        }
        route: bytes | None = b""
        if route_id is not None:
            headers[answer_headers.ROUTE] = route_id
            route = _route_line(route_id)
        response = cls(status=200, headers=headers)
        if route is not None and not _UNSAFE.search(request_id):
            response._lines = _LINES % (request_id.encode(), attempts, route)
        return response

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent or self._payload_writer is not None:
            return await super().prepare(request)  # ended or prepared: nothing to do
        lines = self._lines
        writer = None
        if lines is not None and self._status == 200 and self._reason == "OK":
            writer = response_head.writer_past(self, request)
        if writer is None:
            prepared = await super().prepare(request)
            direct = response_head.plain(prepared)
            if direct is not None and direct.chunked:  # an HTTP/1.0 client's is not
                self._direct = direct
            return prepared
        # As StreamResponse.prepare() sets it for a POST's 200 with no length, over
        # HTTP/1.1: a body, chunked, the head buffered until the first write.
        keep_alive = response_head.start(self, request, writer)
        writer.chunked = True
        date = rfc822_formatted_time()
        added = {"Transfer-Encoding": "chunked", "Date": date, "Server": SERVER_SOFTWARE}
        if not keep_alive:
            added["Connection"] = "close"
        self._headers.update(added)  # what was sent, for whoever reads them
        closing = b"" if keep_alive else b"Connection: close\r\n"
        writer._headers_buf = _HEAD % (lines, date.encode(), _SERVER, closing)
        writer._headers_written = False
        self._direct = writer
        return writer

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        writer = self._direct
        if writer is None or not data or self._eof_sent or type(data) is not bytes:
            # An odd writer, aiohttp's own errors, or a view of other items.
            await super().write(data)
            return
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")  # as aiohttp
        chunk = b"%x\r\n%b\r\n" % (len(data), data)
        if writer._headers_buf is not None:
            chunk = take_head(writer) + chunk
        writer.buffer_size += len(chunk)
        writer.output_size += len(chunk)
        transport.write(chunk)
        if writer.buffer_size > DRAIN_PAST:
            writer.buffer_size = 0
            await writer.drain()  # the client reads slower than the upstream writes

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return  # as aiohttp: once (the server's own call after the handler's)
        self.ended = True
        writer = self._direct
        if writer is None or writer._eof or type(data) is not bytes:
            await super().write_eof(data)
            return
        end = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
        response_head.send_last(self, writer, end)
        # Ended before the drain: a cancellation there (the drain's cut at shutdown, a
        # client that reads nothing) leaves nothing for the server's own write_eof() to
        # send again. (aiohttp's writer marks its end after the drain.)
        response_head.ended(self, writer)
        await writer.drain()

    async def fail(self, event: bytes) -> None:
        """End the stream with `event` unless it has ended; a client already gone is
        left alone."""
        if self.ended:
            return
        with contextlib.suppress(ConnectionError):  # the client left: no one to tell
            await self.write_eof(event)
