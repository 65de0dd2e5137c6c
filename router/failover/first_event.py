"""A stream's first content event: read before anything is committed to the client,
so that a stream which fails before its content can still fail over."""

from __future__ import annotations

import time

from router.errors import UpstreamProtocolError
from router.outcomes import Verdict
from router.upstream.translate import Response
from router.wire import sse
from router.wire.dialects import Dialect
from router.wire.redact import Redactor

# Bytes before the first content event that may be looked at again with the next piece
# (a role chunk, a ping): finding where the whole events end costs more than that.
_RESCAN = 4096


async def read_first_event(
    response: Response, dialect: Dialect, timeout: float, max_bytes: int, redactor: Redactor
) -> tuple[bytes, bytes, Verdict | None]:
    """Read until the first event with content, within `timeout` seconds: (every byte
    read so far, that event's payload when it is an error, its verdict then). An error
    event's payload, which goes back to the client as an error body, is redacted.
    A content event the dialect finds from the bytes alone (`content_end`: none of them
    names an error) ends the wait without reading each event; the common first chunk,
    a role chunk and the first text, costs two searches then.

    Everything before that event is held, so all of it must fit in `max_bytes` (the
    limit on one event): an upstream that sends an endless event, or endless pings,
    fails here. Raises UpstreamProtocolError then, and when the stream ends before a
    content event; UpstreamTimeout (via `next_chunk`) when the deadline passes first.
    """
    clock = time.monotonic  # not the loop's: get_running_loop() is a getpid() syscall
    deadline = clock() + timeout
    buffer = b""
    scanned = 0
    while True:
        left = deadline - clock()
        chunk = await response.next_chunk(left if left > 0.0 else 0.0, phase="first_byte")
        if not chunk:
            raise UpstreamProtocolError(response.route_id, "stream ended before its first event")
        buffer += chunk
        if dialect.content_end(buffer, scanned) >= 0:
            return buffer, b"", None
        for event, data, end in sse.events(buffer, scanned):
            scanned = end
            if not dialect.is_preamble(event, data):
                error = dialect.error(event, data)
                if error is not None:
                    clean = redactor.scrub_bytes(data)
                    if clean is not data:
                        data, error = clean, dialect.error(event, clean)
                return buffer, data, error
        # Past every whole event looked at, once what is left to look at again is more
        # than a little: comments and pings, which carry no data, are not read again
        # with each piece (a stream of them made each read parse all of them again:
        # seconds of the loop before the event limit).
        if len(buffer) - scanned > _RESCAN:
            complete = sse.complete_length(buffer)
            if complete > scanned:
                scanned = complete
        if len(buffer) > max_bytes:
            raise UpstreamProtocolError(
                response.route_id, f"no content event in the first {max_bytes} bytes of the stream"
            )
