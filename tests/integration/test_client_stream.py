"""The client's side of a stream: its head goes out with its first events."""

from __future__ import annotations

import array
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


async def _serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def _exchange(port: int, version: str, reader_waits: asyncio.Event | None = None) -> bytes:
    """Every byte the server sends for one GET, read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET / HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10):
            if reader_waits is not None:
                await reader_waits.wait()
            return await reader.read()
    finally:
        writer.close()


def _chunks(raw: bytes) -> list[bytes]:
    """The chunks of one chunked body, asserting it is well formed and ends."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head, head
    chunks = []
    while True:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            assert rest == b"\r\n", rest[:200]
            return chunks
        chunks.append(rest[:length])
        assert rest[length : length + 2] == b"\r\n"
        rest = rest[length + 2 :]


# A view of 4-byte items is 8 bytes, not 2: such a piece goes through aiohttp's write.
PIECES = [EVENT, b"", EVENT * 3, b"x" * 200_000, memoryview(array.array("I", [1, 2])), EVENT]


async def _pieces_over(version: str) -> tuple[bytes, list[bool]]:
    """What a client on HTTP/`version` receives for PIECES and a last event with the
    end, and after each piece whether the stream writes straight to the transport."""
    direct: list[bool] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = ClientStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in PIECES:
            await response.write(piece)
            direct.append(response._direct is not None)
        await response.write_eof(EVENT)
        return response

    runner, port = await _serve(handler)
    try:
        return await _exchange(port, version), direct
    finally:
        await runner.cleanup()


async def test_after_the_head_each_piece_goes_out_as_one_chunk_of_its_own():
    """Past the head the pieces skip aiohttp's writer (bench: 4,000 instructions an
    event) and frame themselves as it would: one chunk each, none for an empty piece,
    the end after the last."""
    raw, direct = await _pieces_over("1.1")
    assert _chunks(raw) == [bytes(p) for p in PIECES if p] + [EVENT]
    assert direct == [True] * len(PIECES)  # from the first write on: the head went with it


async def test_an_http_1_0_client_gets_the_plain_body_through_aiohttp():
    raw, direct = await _pieces_over("1.0")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and body == b"".join(map(bytes, PIECES)) + EVENT
    assert not any(direct)


async def test_a_client_that_does_not_read_holds_the_writer_not_the_memory():
    """16 MiB written to a client that reads nothing: the writes wait for it (as aiohttp's
    drain makes them), the buffer stays small; once it reads, it gets every byte."""
    piece, count = b"y" * 65_536, 256
    reading, written = asyncio.Event(), asyncio.Event()
    buffered: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = ClientStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        assert request.transport is not None
        for _ in range(count):
            await response.write(piece)
            buffered.append(request.transport.get_write_buffer_size())
        written.set()
        await response.write_eof()
        return response

    runner, port = await _serve(handler)
    try:
        exchange = asyncio.create_task(_exchange(port, "1.1", reading))
        await asyncio.sleep(0.5)
        assert not written.is_set()  # held: the client has not read
        assert 0 < len(buffered) < count
        assert max(buffered) < 2 * 1024 * 1024, max(buffered)
        reading.set()
        raw = await exchange
    finally:
        await runner.cleanup()
    assert b"".join(_chunks(raw)) == piece * count
