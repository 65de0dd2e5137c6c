"""The upstream HTTP/1.1 client against servers on 127.0.0.1 that write exact bytes:
framing, keep-alive, stale connections, broken answers, compression, back-pressure, TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme
from aiohttp import web

from router.errors import UpstreamConnectionError, UpstreamProtocolError
from router.http_client import BadResponse, BrokenBody, Disconnected, HttpClient
from router.types import Key, Route, Timeouts
from router.upstream import Upstream
from tests.conftest import raw_upstream

pytestmark = pytest.mark.timeout(20)

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Wire:
    """A TCP server whose `serve(reader, writer, n)` writes whatever bytes a test needs;
    `n` counts the connections accepted so far, from 1. Requests are recorded whole."""

    def __init__(self, serve: Serve) -> None:
        self._serve = serve
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._serve(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def wire(serve: Serve) -> AsyncIterator[Wire]:
    server_wire = Wire(serve)
    server = await asyncio.start_server(server_wire._accept, "127.0.0.1", 0)
    server_wire.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        yield server_wire
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    try:
        yield http
    finally:
        http.close()


async def post(client: HttpClient, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await client.post(url, body, {"Content-Type": "application/json"}, connect_timeout=2)
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_the_request_on_the_wire_is_plain_http_1_1(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(OK)

    async with wire(serve) as server:
        url = server.url.replace("/v1/chat/completions", "/openai/deployments/d/chat?api-version=1")
        assert await post(client, url, b'{"a":1}') == (200, b"{}")
    port = url.split(":")[2].split("/")[0]
    assert server.requests[0] == (
        b"POST /openai/deployments/d/chat?api-version=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{port}\r\n".encode()
        + b"Content-Type: application/json\r\nUser-Agent: llm-router\r\nAccept: */*\r\n"
        b"Accept-Encoding: gzip, deflate\r\nContent-Length: 7\r\n\r\n"
        b'{"a":1}'
    )


async def test_one_connection_serves_request_after_request(client) -> None:
    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            writer.write(OK)

    async with wire(serve) as server:
        for _ in range(5):
            assert await post(client, server.url) == (200, b"{}")
    assert (server.connections, len(server.requests)) == (1, 5)


async def test_requests_at_once_each_get_their_own_connection(client) -> None:
    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            await asyncio.sleep(0.05)  # all four are in flight together
            writer.write(OK)

    async with wire(serve) as server:
        results = await asyncio.gather(*(post(client, server.url) for _ in range(4)))
        assert results == [(200, b"{}")] * 4
        await asyncio.gather(*(post(client, server.url) for _ in range(4)))
    assert server.connections == 4  # the second wave reused the first wave's connections


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"Content-Length: 11\r\n\r\nhello world", id="content-length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            id="chunked",
        ),
    ],
)
async def test_framed_bodies_are_read_whole_and_the_connection_kept(client, answer) -> None:
    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n" + answer)

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"hello world")
        assert await post(client, server.url) == (200, b"hello world")
    assert server.connections == 1


async def test_a_body_that_ends_with_the_connection_is_complete(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"until the end")
        assert await post(client, server.url) == (200, b"until the end")
    assert server.connections == 2  # not kept: the server said close


async def test_a_server_that_closed_an_idle_connection_costs_no_failure(client) -> None:
    """Keep-alive's race: the server drops an idle connection just as a request goes out
    on it. Nothing was answered, so the request goes again on a new connection, once."""

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        if n == 1:
            writer.write(OK)
            await server.read_request(reader)  # the second request: dropped unanswered
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"{}")
        assert await post(client, server.url) == (200, b"fresh")
    assert (server.connections, len(server.requests)) == (2, 3)


async def test_a_new_connection_dropped_unanswered_is_not_tried_again(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)

    async with wire(serve) as server:
        with pytest.raises(Disconnected):
            await post(client, server.url)
    assert server.connections == 1


async def test_a_connection_cut_inside_the_head_is_not_tried_again(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        if n == 1:
            writer.write(OK)
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")  # and gone

    async with wire(serve) as server:
        await post(client, server.url)
        with pytest.raises(Disconnected) as caught:
            await post(client, server.url)
    assert caught.value.anything_received and server.connections == 1


async def test_a_body_cut_short_is_a_broken_body(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    async with wire(serve) as server:
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        assert await response.readany() == b"half"
        with pytest.raises(BrokenBody):
            await response.readany()
        response.release()


async def test_what_is_not_http_is_a_bad_response(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await asyncio.sleep(1)

    async with wire(serve) as server:
        with pytest.raises(BadResponse):
            await post(client, server.url)


async def test_an_interim_100_continue_is_skipped(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"{}")


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
async def test_compressed_bodies_are_decoded(client, coding, encode) -> None:
    body = b'{"choices": []}' * 100
    packed = encode(body)

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\n"
        writer.write(head.encode() + b"\r\n")
        for at in range(0, len(packed), 7):  # in pieces that split the compressed stream
            piece = packed[at : at + 7]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, body)


async def test_an_encoding_not_asked_for_fails_through_the_upstream(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\n\x0b")

    upstream = Upstream(client, Timeouts())
    try:
        async with wire(serve) as server:
            with pytest.raises(UpstreamProtocolError, match="unsupported content-encoding"):
                await upstream.send(ROUTE, server.url, b"{}", {}, head_timeout=2)
    finally:
        upstream.close()


async def test_the_upstream_maps_a_dropped_connection_to_a_connection_error(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)

    upstream = Upstream(client, Timeouts())
    try:
        async with wire(serve) as server:
            with pytest.raises(UpstreamConnectionError, match="closed the connection"):
                await upstream.send(ROUTE, server.url, b"{}", {}, head_timeout=2)
    finally:
        upstream.close()


async def test_a_reader_that_falls_behind_does_not_buffer_the_whole_body(client) -> None:
    size = 8 << 20
    done = asyncio.Event()

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size >> 16):
            writer.write(b"x" * (1 << 16))
            await writer.drain()  # blocks while the client has stopped reading
        done.set()

    async with wire(serve) as server:
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        await asyncio.sleep(0.3)
        first = await response.readany()
        assert len(first) < 2 << 20 and not done.is_set()  # paused, not holding 8 MiB
        received = len(first)
        while chunk := await response.readany():
            received += len(chunk)
        assert received == size and done.is_set()
        response.release()


async def test_a_line_break_in_a_header_never_reaches_the_wire(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(OK)

    async with wire(serve) as server:
        with pytest.raises(ValueError, match="line break"):
            await client.post(
                server.url, b"{}", {"Authorization": "Bearer x\r\nX-Evil: 1"}, connect_timeout=2
            )
    assert server.requests == []


async def test_tls_with_the_server_name_checked(monkeypatch, tmp_path) -> None:
    authority = trustme.CA()
    served = authority.issue_cert("localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.configure_cert(server_context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"tls": request.secure})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context).start()
    port = runner.addresses[0][1]
    trusted, untrusted = HttpClient(ssl_context=trusting), HttpClient()
    by_env = HttpClient()  # the default context, told of the CA the way README says
    try:
        assert await post(trusted, f"https://localhost:{port}/v1/chat/completions") == (
            200,
            b'{"tls": true}',
        )
        with pytest.raises(ssl.SSLCertVerificationError):  # the system store has no such CA
            await post(untrusted, f"https://localhost:{port}/v1/chat/completions")
        with pytest.raises(ssl.SSLCertVerificationError):  # the name is not on the cert
            await post(trusted, f"https://127.0.0.1:{port}/v1/chat/completions")
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        assert (await post(by_env, f"https://localhost:{port}/v1/chat/completions"))[0] == 200
    finally:
        trusted.close()
        untrusted.close()
        by_env.close()
        await runner.cleanup()


async def test_a_stream_arrives_piece_by_piece_from_aiohttp(client) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in range(3):
            await response.write(b"data: %d\n\n" % n)
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    async with raw_upstream("/v1/chat/completions", handle) as base:
        response = await client.post(base + "/v1/chat/completions", b"{}", {}, connect_timeout=2)
        assert response.headers["content-type"] == "text/event-stream"
        pieces = []
        while piece := await response.readany():
            pieces.append(piece)
        response.release()
    assert pieces == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]


KEY = Key(name="k", provider="openai", api_base="http://127.0.0.1", api_key="sk-test-0000000000")
ROUTE = Route(key=KEY, model="m")
