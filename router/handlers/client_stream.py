"""The client's side of a stream, once its head has gone out.

After `prepare()` the status line is sent: a failure from then on, whatever raised it,
can only end the stream, with an error event in the client's dialect and a clean end of
the body. Returning a new response would make aiohttp write a second HTTP head inside
the chunked body, which no client can read. `ClientStream` knows whether its end has
been written, so that whoever handles the failure ends it at most once.

Its head waits for the first write, as a `web.Response`'s does, and goes out with the
first events in one write: a stream is committed only once its first content event is
in hand, so the head would be a write (a syscall, a TCP segment, a wake-up of the
client) of its own for nothing.

After that, each piece goes straight to the transport as one HTTP chunk, which is what
aiohttp's writer does with it too, past its four calls per piece (type checks, the
compression and length cases, the head still to send): they were about 4,000
instructions of every event a stream relays (bench/instructions.py --stream-words).
Only a plain chunked writer is written to that way (an HTTP/1.0 client, a compressed
or counted body goes through aiohttp), and it is drained as aiohttp drains it.
"""

from __future__ import annotations

import contextlib
import inspect

from aiohttp import ClientConnectionResetError, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter

_DRAIN_PAST = 0x10000  # buffered bytes after which aiohttp's writer waits for a drain


def _writer_as_known() -> bool:
    """Whether aiohttp's writer is still the one the direct writes copy: the same
    drain limit, the same cases (compression, a length, hooks) and no new hook. Another
    one (a later aiohttp) gets every piece through its own write()."""
    limit = inspect.signature(StreamWriter.write).parameters.get("LIMIT")
    hooks = set(inspect.signature(StreamWriter.__init__).parameters)
    return (
        limit is not None
        and limit.default == _DRAIN_PAST
        and hooks == {"self", "protocol", "loop", "on_chunk_sent", "on_headers_sent"}
        and all(hasattr(StreamWriter, name) for name in ("_compress", "length", "chunked"))
    )


_DIRECT = _writer_as_known()


class ClientStream(web.StreamResponse):
    """An SSE response that records when its end is written."""

    ended = False  # write_eof was called (even if the client had gone by then)
    # aiohttp >= 3.12 (web.Response sets it too); on an older one the head goes out at
    # prepare(), which changes nothing but the count of writes.
    _send_headers_immediately = False
    _direct: StreamWriter | None = None  # once the head is out: pieces go straight to it
    _first = True

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        writer = self._direct
        if writer is None or not data or self._eof_sent or type(data) is not bytes:
            # The head, an odd writer, aiohttp's own errors, or a view of other items.
            await super().write(data)
            if self._first:
                self._first = False
                self._direct = _plain_chunked(self._payload_writer)
            return
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")  # as aiohttp
        chunk = b"%x\r\n%b\r\n" % (len(data), data)
        writer.buffer_size += len(chunk)
        writer.output_size += len(chunk)
        transport.write(chunk)
        if writer.buffer_size > _DRAIN_PAST:
            writer.buffer_size = 0
            await writer.drain()  # the client reads slower than the upstream writes

    async def write_eof(self, data: bytes = b"") -> None:
        self.ended = True
        await super().write_eof(data)

    async def fail(self, event: bytes) -> None:
        """End the stream with `event` unless it has ended; a client already gone is
        left alone."""
        if self.ended:
            return
        with contextlib.suppress(ConnectionError):  # the client left: no one to tell
            await self.write_eof(event)


def _plain_chunked(writer: AbstractStreamWriter | None) -> StreamWriter | None:
    """`writer` when a piece can go to its transport as one chunk, as it would frame it:
    aiohttp's own, chunked, not compressed, no length to count down, no one to tell of
    each piece, its head already sent."""
    if (
        _DIRECT
        and type(writer) is StreamWriter
        and writer.chunked
        and writer.length is None
        and getattr(writer, "_compress", None) is None
        and getattr(writer, "_on_chunk_sent", None) is None
        and getattr(writer, "on_body_write", None) is None  # aiohttp >= 3.14
        and not getattr(writer, "_headers_buf", None)  # aiohttp >= 3.12: sent with a write
    ):
        return writer
    return None
