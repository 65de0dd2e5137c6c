"""A request body that has all arrived, taken from aiohttp's buffer at once.

A client's request nearly always arrives whole: its head and its body in one read, so
by the time the handler runs, aiohttp's parser has put the body in the request's
StreamReader and marked its end. `request.read()` still goes through its general loop
(`readany()` until an empty piece, each piece through `_read_nowait()`), and taking the
last piece out of the buffer calls the protocol's `resume_reading()`, which feeds the
parser an empty read through the front door's and aiohttp's `data_received()`: about
400 bytecodes a request (`bench/bytecodes.py`), for a resume that nothing paused.
Taking the body here costs about 80.

`arrived()` takes the buffered body in one step and leaves the state `read()` leaves
(the buffer empty, its counters moved on, the body kept for a later `read()`). Reading
is resumed, as aiohttp resumes it, only if it was paused: by a body larger than the
buffer's limit, whose last piece left it paused. Every other case (a body still
arriving, a chunked one, an error, a body over the size limit) goes through
`request.read()`. The copy is of one aiohttp's private state: `_aiohttp_as_known`
checks at import that the names it relies on are where they were, and on another
aiohttp every body goes through `read()`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

_READER = (
    "_buffer",
    "_buffer_offset",
    "_cursor",
    "_eof",
    "_exception",
    "_http_chunk_splits",
    "_protocol",
    "_size",
)


def _aiohttp_as_known() -> bool:
    """Whether aiohttp's StreamReader and read() are still the ones `arrived` copies."""
    chunk = set(StreamReader._read_nowait_chunk.__code__.co_names)
    return (
        set(_READER) <= set(StreamReader.__slots__)
        and {"_buffer", "_buffer_offset", "_size", "_cursor", "resume_reading"} <= chunk
        and {"_read_bytes", "_payload", "_client_max_size", "readany"}
        <= set(web.BaseRequest.read.__code__.co_names)
        and "_reading_paused" in BaseProtocol.__slots__
    )


TAKE = _aiohttp_as_known()


def arrived(request: web.BaseRequest) -> bytes | None:
    """The request's whole body if all of it is in aiohttp's buffer, as `read()` would
    return it; None when `await request.read()` must read it."""
    payload = request._payload
    if (
        not TAKE
        or type(payload) is not StreamReader
        or not payload._eof
        or payload._exception is not None
        or payload._http_chunk_splits is not None  # chunked: read() keeps its splits
        or payload._buffer_offset
        or request._read_bytes is not None
    ):
        return None
    buffer = payload._buffer
    body = b"".join(buffer)  # the one piece itself, nearly always: no copy
    limit = request._client_max_size
    if limit and len(body) > limit:
        return None  # read() refuses it with its 413
    buffer.clear()
    payload._size -= len(body)
    payload._cursor += len(body)
    protocol = payload._protocol
    if protocol._reading_paused:  # paused when the body outgrew the buffer's limit
        protocol.resume_reading()
    request._read_bytes = body
    return body


def forget_body(request: web.BaseRequest) -> None:
    """Drop the request's own copy of its body (`read()` and `arrived()` keep it for a
    later `read()`): a handler done with the body lets it go before the request ends."""
    if TAKE:  # `_read_bytes` is where it was (_aiohttp_as_known)
        request._read_bytes = None
