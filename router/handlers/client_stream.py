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
"""

from __future__ import annotations

import contextlib

from aiohttp import web


class ClientStream(web.StreamResponse):
    """An SSE response that records when its end is written."""

    ended = False  # write_eof was called (even if the client had gone by then)
    # aiohttp >= 3.12 (web.Response sets it too); on an older one the head goes out at
    # prepare(), which changes nothing but the count of writes.
    _send_headers_immediately = False

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
