"""The client's side of a stream: its head goes out with its first events."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from aiohttp import web

from router.handlers.client_stream import ClientStream

EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


@pytest.mark.skipif(
    not hasattr(web.StreamResponse, "_send_headers_immediately"),
    reason="aiohttp before 3.12 sends a stream's head at prepare()",
)
async def test_the_head_goes_out_with_the_first_events_in_one_write():
    prepared, go = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = ClientStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        prepared.set()
        await go.wait()
        await response.write(EVENT)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            await prepared.wait()
        # A write on loopback is in the peer's receive queue when the send returns: a
        # head sent by prepare() would be readable now.
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            early = client.recv(65536)
            raise AssertionError(f"the head went out before the first events: {early!r}")
        go.set()
        client.settimeout(5)
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, client.recv, 65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n"), first
        assert EVENT in first  # head and first events in one segment: one write
    finally:
        go.set()  # the handler ends whatever happened, so the cleanup does not wait
        client.close()
        await runner.cleanup()
