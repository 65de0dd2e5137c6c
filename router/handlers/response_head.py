"""What the router's own responses share when they write past aiohttp's prepare().

aiohttp's `prepare()` and `write_eof()` serve every response a server can send: cookies,
compression, HTTP/1.0, empty bodies, hooks that see the response first, payload
objects. The router's streams and answers are none of those, and going through them
was about 400 to 600 bytecodes a request (`bench/bytecodes.py`). `ClientStream` and
`ClientAnswer` write their head and body themselves when `writer_past` says the case
is the plain one, and set aiohttp's state where its own code sets it (`start`,
`ended`), so that the server's code after the handler (keep-alive, the access log, a
second `write_eof()`) finds what it expects. Every other case goes through aiohttp.

The copy is of one aiohttp's private state: `_aiohttp_as_known` checks at import that
the names it relies on are still where they were, and on another aiohttp every
response goes through aiohttp's own code.
"""

from __future__ import annotations

import inspect
import sys

from aiohttp import ClientConnectionResetError, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from aiohttp.http_writer import StreamWriter

# A whole answer up to this size goes out joined to its head, in one write; a larger one
# beside it.
_JOINED_AT_MOST = 1 << 16
# asyncio's writelines() on CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 never pauses the
# protocol (CVE-2024-12254; aiohttp's SKIP_WRITELINES): there a large answer is joined
# as before. On 3.11 it joins and writes; uvloop's is a writev that pauses.
_PY = sys.version_info[:3]
_WRITELINES_PAUSES = _PY < (3, 12) or (3, 12, 9) <= _PY < (3, 13) or _PY >= (3, 13, 2)

DRAIN_PAST = 0x10000  # buffered bytes after which aiohttp's writer waits for a drain


def _aiohttp_as_known() -> bool:
    """Whether aiohttp's writer and response are still the ones the direct writes copy:
    the same drain limit, the same cases (compression, a length, hooks), no new hook,
    and the state its prepare() and write_eof() set where they set it."""
    limit = inspect.signature(StreamWriter.write).parameters.get("LIMIT")
    hooks = set(inspect.signature(StreamWriter.__init__).parameters)
    response = web.StreamResponse
    return (
        limit is not None
        and limit.default == DRAIN_PAST
        and hooks == {"self", "protocol", "loop", "on_chunk_sent", "on_headers_sent"}
        and all(hasattr(StreamWriter, name) for name in ("_compress", "length", "chunked"))
        and {"_headers_buf", "_headers_written", "_on_chunk_sent", "_on_headers_sent"}
        <= set(StreamWriter.__init__.__code__.co_names)
        and "on_body_write" in StreamWriter.__init__.__code__.co_names
        and {"_eof"} <= set(StreamWriter.write_eof.__code__.co_names)
        and {"_must_be_empty_body"} <= set(response.prepare.__code__.co_names)
        and {"_req", "_payload_writer", "_prepare_hook"} <= set(response._start.__code__.co_names)
        and {"_keep_alive", "_cookies", "_compression", "_chunked"}
        <= set(response._prepare_headers.__code__.co_names)
        and {"_eof_sent", "_req", "_body_length", "_payload_writer"}
        <= set(response.write_eof.__code__.co_names)
        # ClientAnswer's: Response adds a Content-Length at _start() and writes its body
        # of bytes as the end.
        and {"CONTENT_LENGTH", "_body", "_chunked"} <= set(web.Response._start.__code__.co_names)
        and {"_body", "_compressed_body", "_must_be_empty_body"}
        <= set(web.Response.write_eof.__code__.co_names)
    )


DIRECT = _aiohttp_as_known()


def plain(writer: AbstractStreamWriter | None) -> StreamWriter | None:
    """`writer` if bytes can go to its transport as it would send them: aiohttp's own,
    not compressed, no length to count down, no one to tell of the head or of each
    piece."""
    if (
        DIRECT
        and type(writer) is StreamWriter
        and writer.length is None
        and writer._compress is None
        and writer._on_chunk_sent is None
        and writer._on_headers_sent is None
        and writer.on_body_write is None
    ):
        return writer
    return None


def writer_past(response: web.StreamResponse, request: web.BaseRequest) -> StreamWriter | None:
    """The writer `response`, not yet prepared, may write its head and body to itself:
    for a POST over HTTP/1.1 (a body; HEAD's and CONNECT's are empty), a plain writer,
    no cookie, no compression, no hook that would see the response first."""
    if (
        request.version == HttpVersion11
        and request.method == "POST"
        and not response._cookies
        and not response._compression
        and not response._chunked
        and not _has_prepare_hooks(request)
    ):
        return plain(request._payload_writer)
    return None


def _has_prepare_hooks(request: web.BaseRequest) -> bool:
    match_info = getattr(request, "_match_info", None)  # a BaseRequest has no hooks
    if match_info is None:
        return False
    for app in match_info.apps:  # noqa: SIM110 (a loop: any()'s generator costs more)
        if app.on_response_prepare:
            return True
    return False


def start(response: web.StreamResponse, request: web.BaseRequest, writer: StreamWriter) -> bool:
    """Set what StreamResponse.prepare() sets for a body; the connection's keep-alive."""
    keep_alive = response._keep_alive
    if keep_alive is None:
        keep_alive = response._keep_alive = request.keep_alive
    response._must_be_empty_body = False
    response._req = request
    response._payload_writer = writer
    return keep_alive


def send_last(response: web.StreamResponse, writer: StreamWriter, data: bytes) -> None:
    """Write `data` (with the head aiohttp holds for the first write, if it still does)
    as the response's last bytes; the caller then drains and calls `ended`."""
    transport = writer.transport
    if transport is None or transport.is_closing():
        raise ClientConnectionResetError("Cannot write to closing transport")  # as aiohttp
    if writer._headers_buf is None:
        writer.buffer_size += len(data)
        writer.output_size += len(data)
        transport.write(data)
        return
    head = take_head(writer)
    size = len(head) + len(data)
    writer.buffer_size += size
    writer.output_size += size
    if len(data) > _JOINED_AT_MOST and _WRITELINES_PAUSES:
        # Apart: head + data would be a second copy of a large answer, held until the
        # client has read it (uvloop writes both with one writev).
        transport.writelines((head, data))
    else:
        transport.write(head + data)


def ended(response: web.StreamResponse, writer: StreamWriter) -> None:
    """As StreamWriter.write_eof() and StreamResponse.write_eof() leave them."""
    writer._eof = True
    response._eof_sent = True
    response._req = None
    response._body_length = writer.output_size
    response._payload_writer = None


def take_head(writer: StreamWriter) -> bytes:
    """The head aiohttp holds for the first write, marked sent (as its writer marks it)."""
    head = writer._headers_buf
    writer._headers_buf = None
    writer._headers_written = True
    return head or b""
