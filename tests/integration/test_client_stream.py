"""The client's side of a stream: its head goes out with its first events."""

from __future__ import annotations

import array
import asyncio
import contextlib
import socket

import pytest
from aiohttp import web

from router.handlers.client_stream import ClientStream
from tests.integration.aiohttp_heads import POST, served, without_date
from tests.integration.test_secrets import raw_request

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
    app.router.add_route("*", "/", handler)
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


async def test_an_end_cancelled_in_its_drain_is_not_sent_twice():
    """The drain's cut at shutdown cancels a handler wherever it waits: here in the
    end's drain, to a client that reads nothing yet. The stream counts as ended (its
    error event is not added), and the server's own write_eof() after the handler
    sends nothing more: one terminator, not a second after it (aiohttp's writer, which
    marks its end after the drain, sends two)."""
    last = b"data: " + b"z" * (16 * 1024 * 1024) + b"\n\n"
    reading, draining = asyncio.Event(), asyncio.Event()
    outcome: list[bool] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = ClientStream(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(EVENT)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.3, draining.set)
        asyncio.get_running_loop().call_later(0.3, task.cancel)
        try:
            await response.write_eof(last)
            outcome.append(False)  # not held: the test proves nothing
        except asyncio.CancelledError:
            task.uncancel()
            outcome.append(response.ended)
            await response.fail(b"data: error\n\n")  # as the drain's cut: skipped
        return response

    runner, port = await _serve(handler)
    try:
        exchange = asyncio.create_task(_exchange(port, "1.1", reading))
        async with asyncio.timeout(5):
            await draining.wait()
        await asyncio.sleep(0.1)
        reading.set()
        raw = await exchange
    finally:
        await runner.cleanup()
    assert outcome == [True]
    assert _chunks(raw) == [EVENT, last]  # and nothing after the one terminator


# The router's own streams: a head written as bytes, not built by aiohttp's prepare().

ROUTED = ("req-7f3a", "openai-main/gpt-4o", 2)


async def _raw_exchange(port: int, request: bytes) -> bytes:
    return await raw_request(f"http://127.0.0.1:{port}", request)


async def _both_ways(
    request: bytes, write: list[bytes], end: bytes, app_setup=None
) -> tuple[bytes, bytes, list[bool]]:
    """What a client gets for `request` from `ClientStream.sse` and from aiohttp's own
    StreamResponse with the same headers, writing `write` then ending with `end`; and
    whether aiohttp's _prepare_headers() built the ClientStream's head."""

    async def routed(request: web.Request) -> web.StreamResponse:
        response = ClientStream.sse(*ROUTED)
        await response.prepare(request)
        for piece in write:
            await response.write(piece)
        await response.write_eof(end)
        return response

    async def plain(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": ROUTED[0],
                "x-router-attempts": str(ROUTED[2]),
                "x-router-route": ROUTED[1],
            }
        )
        await response.prepare(request)
        for piece in write:
            await response.write(piece)
        await response.write_eof(end)
        return response

    ours, built = await served(routed, request, app_setup)
    theirs, built_theirs = await served(plain, request, app_setup)
    assert web.StreamResponse in built_theirs  # the spy sees aiohttp's own prepare
    return ours, theirs, [ClientStream in built]


@pytest.mark.parametrize("connection", [b"Connection: close\r\n", b""], ids=["close", "keep"])
@pytest.mark.parametrize(
    ("write", "end"),
    [([EVENT], b""), ([EVENT, EVENT * 2], EVENT), ([], EVENT), ([], b"")],
    ids=["events-then-end", "events-and-end", "end-with-events", "end-alone"],
)
async def test_a_routed_stream_sends_the_head_aiohttp_would_send(connection, write, end):
    """The head is written as bytes, not built by aiohttp, and is what aiohttp builds for
    the same headers (but for the Date, a clock's): status line, the router's lines,
    chunked, Date, Server, and Connection: close when the client asked for it. The body
    is framed alike, whether the head goes out with a write or with the end."""
    request = POST % connection
    if not connection:
        request += b"GET /none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    routed, plain, built = await _both_ways(request, write, end)
    assert built == [False]  # the routed stream's head never went through aiohttp's
    assert without_date(routed) == without_date(plain)
    head, _, rest = routed.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nx-router-route: openai-main/gpt-4o\r\n" in head
    assert (b"\r\nConnection: close" in head) == bool(connection)
    if not connection:
        # Kept alive: the same connection answers a second request after the stream.
        assert rest.count(b"HTTP/1.1 ") == 1 and b"HTTP/1.1 404 Not Found" in rest
    else:
        assert _chunks(routed) == [p for p in [*write, end] if p]


@pytest.mark.parametrize(
    ("request_bytes", "setup", "check"),
    [
        (  # HTTP/1.0: no chunks, aiohttp's plain body
            b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            None,
            lambda raw: b"chunked" not in raw.partition(b"\r\n\r\n")[0].lower(),
        ),
        (  # HEAD: an empty body, so no chunks (what is written anyway is aiohttp's call)
            b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            None,
            lambda raw: b"chunked" not in raw.partition(b"\r\n\r\n")[0].lower(),
        ),
        (  # an application that sees the response first: its header goes out
            POST % b"Connection: close\r\n",
            lambda app: app.on_response_prepare.append(_stamp),
            lambda raw: b"\r\nx-stamped: yes\r\n" in raw,
        ),
    ],
    ids=["http-1.0", "head", "prepare-hook"],
)
async def test_any_other_case_goes_through_aiohttp_and_gets_its_answer(request_bytes, setup, check):
    routed, plain, built = await _both_ways(request_bytes, [EVENT], EVENT, setup)
    assert built == [True]
    assert without_date(routed) == without_date(plain)
    assert check(routed), routed


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-stamped"] = "yes"


async def test_a_route_no_header_may_hold_is_refused_as_aiohttp_refuses_it():
    """A route id with a control character is not written as bytes: it goes through
    aiohttp, which refuses it rather than send a split header. (routes.yaml refuses
    such a model or key name at load: this is the guard behind that.)"""
    response = ClientStream.sse("req-1", "key/evil\r\nx-injected: 1", 1)
    assert response._lines is None
    assert ClientStream.sse("req-1", "key/model\twith-tab", 1)._lines is not None
    assert ClientStream.sse("req-\n1", None, 1)._lines is None

    async def handler(request: web.Request) -> web.StreamResponse:
        with pytest.raises(ValueError, match=r"[Ff]orbidden"):
            await response.prepare(request)
        return web.Response(text="refused")

    runner, port = await _serve(handler)
    try:
        raw = await _raw_exchange(port, POST % b"Connection: close\r\n")
    finally:
        await runner.cleanup()
    assert b"x-injected" not in raw and b"refused" in raw


async def test_after_its_end_a_routed_stream_is_in_the_state_aiohttp_leaves():
    """What the server reads of the response after the handler: ended once, its
    length, keep-alive; and the headers say what was sent."""
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        response = ClientStream.sse(*ROUTED)
        await response.prepare(request)
        await response.write(EVENT)
        await response.write_eof(EVENT)
        await response.write_eof(b"late")  # a second end is nothing, as in aiohttp
        seen.update(
            ended=response.ended,
            length=response.body_length,
            keep_alive=response.keep_alive,
            prepared=response.prepared,
            headers=dict(response.headers),
        )
        with pytest.raises(RuntimeError):
            await response.write(EVENT)
        return response

    runner, port = await _serve(handler)
    try:
        raw = await _raw_exchange(port, POST % b"Connection: close\r\n")
    finally:
        await runner.cleanup()
    assert _chunks(raw) == [EVENT, EVENT]
    assert seen["ended"] is True and seen["prepared"] is True
    assert seen["length"] == len(raw)  # as aiohttp counts it: the head and the framing
    assert seen["keep_alive"] is False  # the client said close
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["Transfer-Encoding"] == "chunked" and headers["Connection"] == "close"
    assert {"Date", "Server", "x-request-id", "x-router-route"} <= set(headers)
