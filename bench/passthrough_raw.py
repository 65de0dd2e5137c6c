"""bench/passthrough_lean.py without aiohttp's server: how much the front side costs.

    python bench/passthrough_raw.py --upstream http://127.0.0.1:PORT/v1 --key sk-... --port 0

The lean pass-through forwards through the router's own upstream client but still
serves its clients through aiohttp's web server (its parser, request and response
objects, the task per request). This one serves them from an asyncio protocol on
httptools, the parser the upstream client uses, and writes the answer to the transport
itself: HTTP/1.1 keep-alive, Content-Length request bodies, chunked answers, one
request at a time a connection. It has none of a real front door's limits, timeouts or
error answers, so it is a floor to measure against, never a server to run: the lean
pass-through over it is what aiohttp's server side costs a request.
"""

from __future__ import annotations

import asyncio
import signal

import httptools
from passthrough import main  # bench/ is first on the path of a script run here

from router.upstream.client import HttpClient
from router.upstream.response import Response

_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_HEAD = b"HTTP/1.1 %d OK\r\nContent-Type: %b\r\nTransfer-Encoding: chunked\r\n\r\n"


class Front(asyncio.Protocol):
    """One client connection: a request's body in, the upstream's answer out."""

    def __init__(self, client: HttpClient, url: str, headers: dict[str, str]) -> None:
        self._client = client
        self._url = url
        self._headers = headers
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None  # the loop keeps only a weak reference

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self._transport.close()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body.clear()
        if self._parser.get_method() != b"POST":  # a readiness probe: nothing here
            self._transport.write(_NOT_FOUND)  # type: ignore[union-attr]
            return
        self._transport.pause_reading()  # type: ignore[union-attr]  # one at a time
        self._task = asyncio.get_running_loop().create_task(self._forward(body))

    async def _forward(self, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        try:
            up: Response = await self._client.post(
                self._url, body, self._headers, connect_timeout=5
            )
        except Exception:
            transport.close()  # no error answers here: the client sees the connection end
            raise
        try:
            kind = up.headers.get("Content-Type", "application/json").encode()
            head = _HEAD % (up.status, kind)
            while chunk := await up.readany():
                transport.write(head + b"%x\r\n%b\r\n" % (len(chunk), chunk))
                head = b""
            transport.write(head + b"0\r\n\r\n")
        except Exception:
            transport.close()
            raise
        finally:
            up.release()
        if not transport.is_closing():
            transport.resume_reading()


async def serve(upstream: str, key: str, port: int) -> None:
    client = HttpClient()
    url = upstream + "/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Front(client, url, headers), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        client.close()


if __name__ == "__main__":
    main(serve)
