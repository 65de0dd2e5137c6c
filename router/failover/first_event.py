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

    The events looked at (a role chunk, pings) are set aside whole (`done`); only what
    follows them (`tail`) is read again, and only once a read brings an event's end:
    an event sent a little at a time is not searched and copied whole with each read
    (which cost time in the square of its size, a minute of the loop for 8 MiB sent a
    kilobyte at a time).
    """
    clock = time.monotonic  # not the loop's: get_running_loop() is a getpid() syscall
    deadline = clock() + timeout
    done: list[bytes] = []
    held = 0  # bytes in `done`
    tail = bytearray()
    while True:
        left = deadline - clock()
        chunk = await response.next_chunk(left if left > 0.0 else 0.0, phase="first_byte")
        if not chunk:
            raise UpstreamProtocolError(response.route_id, "stream ended before its first event")
        if tail:
            seen = len(tail)
            tail += chunk
            ended = sse.ends_after(tail, seen - 3 if seen > 3 else 0)
            view = bytes(tail) if ended else b""
        else:
            view = chunk  # the usual first read: whole events, nothing held
            ended = True
        if ended:
            if dialect.content_end(view, 0) >= 0:
                return _joined(done, view), b"", None
            for event, data, _ in sse.events(view):
                if not dialect.is_preamble(event, data):
                    error = dialect.error(event, data)
                    if error is not None:
                        clean = redactor.scrub_bytes(data)
                        if clean is not data:
                            data, error = clean, dialect.error(event, clean)
                    return _joined(done, view), data, error
            # Only preamble, comments and pings so far: set aside, never read again.
            complete = sse.complete_length(view)
            if complete:
                done.append(view[:complete])
                held += complete
            tail = bytearray(memoryview(view)[complete:])
        if held + len(tail) > max_bytes:
            raise UpstreamProtocolError(
                response.route_id, f"no content event in the first {max_bytes} bytes of the stream"
            )


def _joined(done: list[bytes], view: bytes) -> bytes:
    if not done:
        return view
    done.append(view)
    return b"".join(done)
