"""A whole answer (not a stream): its head and its body in one write, past aiohttp.

A `web.Response` for a body in hand goes through aiohttp's prepare() and write_eof():
three levels of each, for the general cases (cookies, compression, HTTP/1.0, empty
bodies, hooks, payload objects), about 500 bytecodes of a plain request's 6,500
(`bench/bytecodes.py`). In the plain case (`response_head.writer_past`) a
`ClientAnswer` adds the headers aiohttp would add (Content-Length, Date, Server,
Connection: close when the client asked for it), in its order, serialises them with
aiohttp's own function, and writes head and body to the transport in one write, as
aiohttp's writer would. Headers set after the handler (the endpoint's `x-request-id`)
are in it: the head is built at prepare(), not before. Any other case is a plain
`web.Response`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_writer import StreamWriter, _serialize_headers

from router.handlers import response_head


class ClientAnswer(web.Response):
    """An answer with a body of bytes; `web.Response` in every case but the plain one."""

    _past: StreamWriter | None = None  # prepared here: write_eof() writes to it itself

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None  # written by the endpoint (_deliver): aiohttp's call finds it done
        if self._payload_writer is not None:
            return await super().prepare(request)  # prepared: nothing to do
        body = self._body
        headers = self._headers
        writer = None
        if (
            type(body) is bytes
            and self._status >= 200
            and self._status not in (204, 304)  # no body, as 1xx
            and "Content-Length" not in headers
            and "Content-Type" in headers
        ):
            writer = response_head.writer_past(self, request)
        if writer is None:
            return await super().prepare(request)
        keep_alive = response_head.start(self, request, writer)
        # As web.Response._start() and StreamResponse._prepare_headers() add them.
        added = {
            "Content-Length": str(len(body)),
            "Date": rfc822_formatted_time(),
            "Server": SERVER_SOFTWARE,
        }
        if not keep_alive:
            added["Connection"] = "close"
        headers.update(added)
        status_line = f"HTTP/1.1 {self._status} {self._reason}"
        writer._headers_buf = _serialize_headers(status_line, headers)
        writer._headers_written = False
        self._past = writer
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        writer = self._past
        if writer is None or data:
            await super().write_eof(data)
            return
        response_head.send_last(self, writer, self._body)  # type: ignore[arg-type]
        response_head.ended(self, writer)  # before the drain, as ClientStream's end
        await writer.drain()
