"""The upstream HTTP/1.1 client against servers on 127.0.0.1 that write exact bytes:
framing, keep-alive, stale connections, broken answers, compression, back-pressure, TLS."""

from __future__ import annotations

import asyncio
import functools
import gzip
import random
import socket
import ssl
import string
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from router.errors import UpstreamConnectionError, UpstreamProtocolError
from router.types import Key, Limits, Route, Timeouts
from router.upstream import Upstream
from router.upstream.client import (
    BadResponse,
    BrokenBody,
    Disconnected,
    HttpClient,
    InvalidHeader,
    TooLarge,
)
from router.upstream.inflate import PIECE, Decoder
from tests.conftest import raw_upstream
from tests.tls import tls_contexts

pytestmark = pytest.mark.timeout(20)

# Every test here runs on both loops (conftest.py's pytest_asyncio_loop_factories): the
# router serves on uvloop, whose transports differ from asyncio's in what they report
# on a close, a reset or a pause.
BOTH_LOOPS = True

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


async def test_only_small_header_blocks_are_kept_for_the_next_request(client) -> None:
    """A client varying large header values must not fill the cache of built blocks:
    one over 8 KiB goes out as built and is not kept; an SDK's ordinary one is."""

    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            writer.write(OK)

    large = {"Content-Type": "application/json", "X-Note": "n" * 10_000}
    async with wire(serve) as server:
        for headers in (large, large, {"Content-Type": "application/json"}):
            response = await client.post(server.url, b"{}", headers, connect_timeout=2)
            assert (response.status, await response.read()) == (200, b"{}")
            response.release()
    assert b"X-Note: " + b"n" * 10_000 + b"\r\n" in server.requests[1]
    assert [dict(fields) for fields in client._blocks] == [{"Content-Type": "application/json"}]


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


async def test_connections_idle_past_the_keepalive_limit_are_closed() -> None:
    closed: list[int] = []

    async def serve(reader, writer, n) -> None:
        try:
            while True:
                await server.read_request(reader)
                await asyncio.sleep(0.02)
                writer.write(OK)
        finally:
            closed.append(n)

    client = HttpClient(limits=Limits(idle_connection_seconds=0.25))
    try:
        async with wire(serve) as server:
            await asyncio.gather(*(post(client, server.url) for _ in range(3)))  # 3 pooled
            await asyncio.sleep(0.15)
            await post(client, server.url)  # keeps one of them fresh
            await asyncio.sleep(0.15)
            await post(client, server.url)  # on the fresh one; the other two are past it
            await asyncio.sleep(0.05)
            assert len(closed) == 2 and server.connections == 3
            await asyncio.sleep(0.3)
            await post(client, server.url)  # the last one is past it too: a new one
            await asyncio.sleep(0.05)
            assert len(closed) == 3 and server.connections == 4
    finally:
        client.close()


@pytest.mark.parametrize(
    ("hint", "connections"),
    [
        pytest.param(b"Keep-Alive: timeout=1\r\n", 3, id="timeout-1-not-reused"),
        pytest.param(b"Keep-Alive: timeout=5, max=100\r\n", 1, id="timeout-5-reused"),
        pytest.param(b"", 1, id="no-hint"),
    ],
)
async def test_a_servers_keep_alive_timeout_is_kept_short_of(client, hint, connections) -> None:
    """A server that says `Keep-Alive: timeout=N` closes a connection idle that long; a
    request sent as it does is lost unanswered (and may not be sent again). Such a
    connection is used for N - 1 s at most: with timeout=1, never again."""
    answer = OK.replace(b"\r\n\r\n", b"\r\n" + hint + b"\r\n", 1) if hint else OK

    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer)

    async with wire(serve) as server:
        for _ in range(3):
            assert await post(client, server.url) == (200, b"{}")
            await asyncio.sleep(0.05)
    assert (server.connections, len(server.requests)) == (connections, 3)


def test_a_keep_alive_hint_is_read_for_its_timeout() -> None:
    from router.upstream.response import _keep_alive_timeout

    assert _keep_alive_timeout("timeout=5, max=1000") == 5.0
    assert _keep_alive_timeout("max=100,timeout=30") == 30.0
    assert _keep_alive_timeout("Timeout = 2") == 2.0
    assert _keep_alive_timeout("max=100") is None
    assert _keep_alive_timeout("timeout=99999999") is None  # no such number: no hint


async def test_a_request_that_went_out_is_never_sent_twice(client) -> None:
    """The server takes the request on a kept-alive connection, works on it, and drops
    the connection unanswered: it may have done (and billed) the work, so the client
    does not send it again; the failover decides what happens next."""

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await server.read_request(reader)  # the second request: read, then dropped

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"{}")
        with pytest.raises(Disconnected):
            await post(client, server.url)
    assert (server.connections, len(server.requests)) == (1, 2)


async def test_a_connection_the_server_closed_while_idle_is_not_reused(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(OK)  # keep-alive by default, then closed at once

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"{}")
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert await post(client, server.url) == (200, b"{}")
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_new_connection_dropped_unanswered_is_a_disconnect(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)

    async with wire(serve) as server:
        with pytest.raises(Disconnected):
            await post(client, server.url)
    assert server.connections == 1


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


async def test_chunks_before_a_broken_chunk_in_the_same_read_are_still_read(client) -> None:
    """A chunked body's chunks reach the reader per read, in one hand-over: those parsed
    before a malformed chunk size are read first, then the error."""

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head + b"3\r\nabc\r\n2\r\nde\r\nzz\r\nbroken\r\n")
        await asyncio.sleep(1)

    async with wire(serve) as server:
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        assert await response.readany() == b"abcde"
        with pytest.raises(BadResponse):
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


async def test_an_interim_head_s_fields_are_not_the_answer_s(client) -> None:
    """Nor are an earlier answer's on the same connection."""

    async def serve(reader, writer, n) -> None:
        for turn in (1, 2):
            await server.read_request(reader)
            interim = b"HTTP/1.1 100 Continue\r\nX-Interim: %d\r\n\r\n" % turn
            writer.write(
                interim + OK.replace(b"Content-Type", b"X-Turn: %d\r\nContent-Type" % turn)
            )

    async with wire(serve) as server:
        for turn in ("1", "2"):
            response = await client.post(
                server.url, b"{}", {"Content-Type": "application/json"}, connect_timeout=2
            )
            try:
                assert (response.status, await response.read()) == (200, b"{}")
                assert response.headers.getall("X-Turn") == [turn]
                assert "X-Interim" not in response.headers
            finally:
                response.release()
        assert server.connections == 1


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        pytest.param("deflate", _raw_deflate, id="deflate-without-zlib-header"),
    ],
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


@pytest.mark.parametrize("framing", ["content-length", "close"])
async def test_a_compressed_body_cut_short_is_a_broken_body(client, framing) -> None:
    packed = gzip.compress(bytes(range(256)) * 64)[:-40]  # the end of the stream is missing

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        length = (
            f"Content-Length: {len(packed)}" if framing == "content-length" else "Connection: close"
        )
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n{length}\r\n\r\n".encode())
        writer.write(packed)

    async with wire(serve) as server:
        with pytest.raises(BrokenBody, match="part way"):
            await post(client, server.url)


async def test_an_empty_compressed_body_is_empty(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n")

    async with wire(serve) as server:
        assert await post(client, server.url) == (200, b"")


@pytest.fixture
def upstream(client: HttpClient) -> Iterator[Upstream]:
    """The router's side of the client, where its errors become UpstreamErrors."""
    upstream = Upstream(client, Timeouts())
    try:
        yield upstream
    finally:
        upstream.close()


async def test_an_encoding_not_asked_for_fails_through_the_upstream(upstream) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\n\x0b")

    async with wire(serve) as server:
        with pytest.raises(UpstreamProtocolError, match="unsupported content-encoding"):
            await upstream.send(ROUTE, server.url, b"{}", {}, head_timeout=2)


async def test_the_upstream_maps_a_dropped_connection_to_a_connection_error(upstream) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)

    async with wire(serve) as server:
        with pytest.raises(UpstreamConnectionError, match="closed the connection"):
            await upstream.send(ROUTE, server.url, b"{}", {}, head_timeout=2)


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
        for bad in ("Bearer x\r\nX-Evil: 1", "Bearer x\nX-Evil: 1", "Bearer \x00x"):
            with pytest.raises(InvalidHeader, match="control character"):
                await client.post(server.url, b"{}", {"Authorization": bad}, connect_timeout=2)
    assert server.requests == []


async def test_a_header_byte_that_is_not_utf8_goes_out_as_it_came(client) -> None:
    """aiohttp's server reads such bytes with surrogateescape; they must not become a
    500, and a proxy sends what it was given."""

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(OK)

    async with wire(serve) as server:
        response = await client.post(
            server.url,
            b"{}",
            {"OpenAI-Beta": b"caf\xe9".decode("utf-8", "surrogateescape")},
            connect_timeout=2,
        )
        await response.read()
        response.release()
    assert b"\r\nOpenAI-Beta: caf\xe9\r\n" in server.requests[0]


async def test_a_whole_body_larger_than_the_pause_mark_is_read(client) -> None:
    """read() wants all of it: the back-pressure that keeps a stream's buffer small
    must not stop a large plain answer (batch embeddings) half way."""
    body = b"e" * (600 << 10)

    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for at in range(0, len(body), 16 << 10):
                writer.write(body[at : at + (16 << 10)])
                await writer.drain()

    async with wire(serve) as server, asyncio.timeout(5):
        assert await post(client, server.url) == (200, body)
        assert await post(client, server.url) == (200, body)  # and the connection is fine
    assert server.connections == 1


async def test_a_connection_paused_at_the_end_of_a_body_is_pooled_reading(client) -> None:
    """A small gzip body that inflates past the pause mark completes in the same read
    that paused the connection; pooled like that, it would never read the next answer."""
    packed = gzip.compress(b"z" * (300 << 10))

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        writer.write(head % len(packed) + packed)
        await server.read_request(reader)
        writer.write(OK)

    async with wire(serve) as server:
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        while await response.readany():
            pass
        response.release()
        async with asyncio.timeout(2):
            assert await post(client, server.url) == (200, b"{}")
    assert server.connections == 1


async def test_bytes_after_a_complete_answer_leave_it_intact_and_end_the_connection(
    client,
) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(OK + b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad")
        await server.read_request(reader)
        writer.write(OK)

    async with wire(serve) as server:
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        assert (response.status, await response.read()) == (200, b"{}")
        assert response.headers["Content-Type"] == "application/json"
        response.release()
        assert await post(client, server.url) == (200, b"{}")
    assert server.connections == 2  # the first connection was not trusted again


async def test_releasing_twice_does_not_pool_the_connection_twice(client) -> None:
    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            await asyncio.sleep(0.02)
            writer.write(OK)

    async with wire(serve) as server:
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        await response.read()
        response.release()
        response.release()
        response.close()  # a late close must not end the connection another request holds
        results = await asyncio.gather(post(client, server.url), post(client, server.url))
    assert results == [(200, b"{}")] * 2 and server.connections == 2


async def test_a_switch_of_protocols_nobody_asked_for_is_a_bad_response(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        await asyncio.sleep(1)

    async with wire(serve) as server:
        with pytest.raises(BadResponse, match="101"):
            await post(client, server.url)


async def test_a_head_too_large_is_a_bad_response(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Big: %s\r\n" % (b"b" * 4000) * 20)
        await asyncio.sleep(1)

    async with wire(serve) as server:
        with pytest.raises(BadResponse, match="head larger"):
            await post(client, server.url)


async def test_a_reset_inside_a_close_delimited_body_is_not_a_complete_body(client) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"partial": ')
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")  # linger 0: the close is a RST, not a FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with wire(serve) as server:
        with pytest.raises(BrokenBody):
            await post(client, server.url)


async def test_tls_with_the_server_name_checked(monkeypatch, tmp_path) -> None:
    server_context, trusting, authority = tls_contexts("localhost")

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


# Limits: what one response may make the client hold (router.types.Limits).

_BIG = 64 << 20  # what a misbehaving server below writes at most, if nobody stops it


async def _flood(writer: asyncio.StreamWriter, piece: bytes, total: int = _BIG) -> int:
    """Write `piece` again and again until `total` bytes or the peer goes; bytes written."""
    written = 0
    try:
        while written < total:
            writer.write(piece)
            written += len(piece)
            await writer.drain()
    except ConnectionError:
        pass
    return written


def _limited(**limits: int | float) -> HttpClient:
    return HttpClient(limits=Limits(**limits))  # type: ignore[arg-type]


async def test_a_header_value_that_never_ends_is_refused_while_it_arrives() -> None:
    sent: list[int] = []

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        sent.append(await _flood(writer, b"v" * 65536))
        await asyncio.sleep(5)

    client = _limited(max_head_bytes=16384)
    try:
        async with wire(serve) as server:
            with pytest.raises(TooLarge, match="head larger than 16384"):
                await post(client, server.url)
            for _ in range(200):  # the client closed: the flood stops well short of its end
                if sent:
                    break
                await asyncio.sleep(0.01)
            assert sent and sent[0] < _BIG // 2
    finally:
        client.close()


_THIRTY_FIELDS = b"".join(b"X-F%d: v\r\n" % i for i in range(30))
_INTERIM_EIGHT = b"HTTP/1.1 100 Continue\r\n" + b"X-F: v\r\n" * 8 + b"\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\n" + _THIRTY_FIELDS + b"Content-Length: 2\r\n\r\n{}",
        _INTERIM_EIGHT * 3 + OK,  # interim heads' fields count towards the limit too
    ],
    ids=["one-head", "interim-heads"],
)
async def test_too_many_header_fields_are_refused(answer: bytes) -> None:
    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(answer)

    client = _limited(max_headers=20)
    try:
        async with wire(serve) as server:
            with pytest.raises(TooLarge, match="more than 20 header fields"):
                await post(client, server.url)
    finally:
        client.close()


@pytest.mark.parametrize(("status", "limit"), [(200, 300_000), (500, 1 << 20)])
async def test_a_body_read_whole_stops_at_its_limit(status: int, limit: int) -> None:
    """A whole body has the body limit (4 MiB here); an error body, 1 MiB at most."""
    sent: list[int] = []

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status)
        sent.append(await _flood(writer, b"10000\r\n" + b"x" * 65536 + b"\r\n"))
        await asyncio.sleep(5)

    client = _limited(max_body_bytes=300_000 if status == 200 else 4 << 20)
    try:
        async with wire(serve) as server:
            with pytest.raises(TooLarge, match=f"body larger than {limit} bytes"):
                await post(client, server.url)
            for _ in range(200):
                if sent:
                    break
                await asyncio.sleep(0.01)
            assert sent and sent[0] < _BIG // 2
    finally:
        client.close()


@functools.cache
def _bomb(encoding: str) -> bytes:
    """64 MiB of zeros, packed to about 64 KiB."""
    zeros = bytes(_BIG)
    return gzip.compress(zeros, 9) if encoding == "gzip" else zlib.compress(zeros, 9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("whole", [True, False], ids=["read", "readany"])
async def test_a_compression_bomb_fails_before_it_inflates(encoding: str, whole: bool) -> None:
    bomb = _bomb(encoding)

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n"
        writer.write(f"{head}Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb)
        await writer.drain()
        await asyncio.sleep(5)

    client = _limited(max_inflate_ratio=100)
    try:
        async with wire(serve) as server:
            response = await client.post(
                server.url, b"{}", {"Content-Type": "application/json"}, connect_timeout=2
            )
            inflated = 0
            try:
                with pytest.raises(TooLarge, match="inflates more than 100 times"):
                    if whole:
                        await response.read()
                    while chunk := await response.readany():
                        inflated += len(chunk)
            finally:
                response.release()
            assert inflated < 8 << 20  # a MiB, and a hundred times what came in
    finally:
        client.close()


@functools.cache
def _chat_stream(events: int) -> bytes:
    """A stream of chunks that repeat all but a word each: it compresses about 25 times."""
    rng = random.Random(1)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8))) for _ in range(999)]
    chunk = (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk",'
        '"choices":[{"delta":{"content":" %s"}}]}'
    )
    return "".join(f"data: {chunk % rng.choice(words)}\n\n" for _ in range(events)).encode()


def _gzip_answer(packed: bytes, framing: str) -> bytes:
    """A 200 with `packed` as its gzip body: by Content-Length, or in 4 KiB chunks (many
    to a read, decoded together)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
    if framing == "content-length":
        return head + b"Content-Length: %d\r\n\r\n" % len(packed) + packed
    pieces = [packed[at : at + 4096] for at in range(0, len(packed), 4096)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_one_read_of_a_well_compressed_stream_comes_a_piece_at_a_time(
    client, framing: str
) -> None:
    """6 MB of events, packed 25 times and sent at once: each socket read of it (64 KiB
    or more) inflated whole, MBs in one chunk, before the stream's back-pressure could
    act. It comes a piece at a time, byte-exact; the socket is read on once each read's
    pieces are taken, and the connection, read to its end, serves the next request."""
    text = _chat_stream(80_000)
    packed = gzip.compress(text)

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(_gzip_answer(packed, framing))
        await server.read_request(reader)
        writer.write(OK)

    async with wire(serve) as server, asyncio.timeout(10):
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        chunks = []
        while chunk := await response.readany():
            chunks.append(chunk)
        assert response.at_eof()
        response.release()
        assert await post(client, server.url) == (200, b"{}")
    assert max(map(len, chunks)) <= PIECE
    assert b"".join(chunks) == text
    assert server.connections == 1


async def test_a_stream_read_in_part_then_whole_gets_the_rest_held_and_unread(client) -> None:
    """read() after readany(): the first takes what the decoder still holds of a read
    (the socket is paused for it) before it reads on."""
    text = _chat_stream(80_000)
    packed = gzip.compress(text)

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(_gzip_answer(packed, "content-length"))

    async with wire(serve) as server, asyncio.timeout(10):
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        try:
            first = await response.readany()
            assert 0 < len(first) <= PIECE
            assert first + await response.read() == text
        finally:
            response.release()


async def test_a_whole_compressed_body_passes_its_limit_by_a_piece_at_most(monkeypatch) -> None:
    """A whole read holds the body whole, up to its limit: a read of gzip inflated in one
    call passed the limit by MBs before the check saw it. Now each call decodes a piece,
    and the check follows each."""
    decoded: list[int] = []
    decompress = Decoder.decompress

    def counted(decoder: Decoder, data: bytes) -> bytes:
        out = decompress(decoder, data)
        decoded.append(len(out))
        return out

    monkeypatch.setattr(Decoder, "decompress", counted)  # watched, not changed
    packed = gzip.compress(_chat_stream(80_000))

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(_gzip_answer(packed, "content-length"))
        await asyncio.sleep(5)

    client = _limited(max_body_bytes=300_000)
    try:
        async with wire(serve) as server:
            with pytest.raises(TooLarge, match="body larger than 300000 bytes"):
                await post(client, server.url)
    finally:
        client.close()
    assert sum(decoded) <= 300_000 + PIECE


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        pytest.param(lambda packed: packed[:-30_000], "ended part way", id="cut-short"),
        pytest.param(lambda packed: packed + b"junk", "bytes after the end", id="bytes-after"),
    ],
)
async def test_a_compressed_stream_spoiled_inside_held_input_fails_there(
    client, spoil, message: str
) -> None:
    """Its end is checked once the held input is decoded, not when the message ends."""
    text = _chat_stream(80_000)
    packed = spoil(gzip.compress(text))

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        writer.write(_gzip_answer(packed, "chunked"))

    async with wire(serve) as server, asyncio.timeout(10):
        response = await client.post(server.url, b"{}", {}, connect_timeout=2)
        chunks = []
        try:
            with pytest.raises(BrokenBody, match=message):
                while chunk := await response.readany():
                    chunks.append(chunk)
        finally:
            response.release()
    assert text.startswith(b"".join(chunks))


async def test_a_body_that_compresses_well_but_not_absurdly_is_read() -> None:
    """A stream of chunks that repeat all but a word each compresses about 25 times."""
    text = _chat_stream(20_000)
    packed = gzip.compress(text)
    assert len(text) / len(packed) > 20

    async def serve(reader, writer, n) -> None:
        await server.read_request(reader)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}"
        writer.write(f"{head}\r\n\r\n".encode() + packed)

    client = HttpClient()  # the default limits
    try:
        async with wire(serve) as server:
            assert await post(client, server.url) == (200, text)
    finally:
        client.close()


async def test_requests_past_the_per_host_cap_wait_for_a_connection() -> None:
    in_flight = 0
    most = 0

    async def serve(reader, writer, n) -> None:
        nonlocal in_flight, most
        while True:
            await server.read_request(reader)
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            writer.write(OK)

    client = _limited(max_connections_per_host=2)
    try:
        async with wire(serve) as server:
            answers = await asyncio.gather(*(post(client, server.url) for _ in range(7)))
            assert answers == [(200, b"{}")] * 7
            assert server.connections == 2 and most == 2
            assert client.open_connections() == 2
    finally:
        client.close()


async def test_a_wait_for_a_connection_ends_with_its_deadline() -> None:
    """A request that gives up waiting leaves no slot taken and no turn lost."""
    hold = asyncio.Event()

    async def serve(reader, writer, n) -> None:
        while True:
            await server.read_request(reader)
            await hold.wait()
            writer.write(OK)

    client = _limited(max_connections_per_host=1)
    try:
        async with wire(serve) as server:
            first = asyncio.create_task(post(client, server.url))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await post(client, server.url)  # no room: it waits, then gives up
            later = asyncio.create_task(post(client, server.url))
            hold.set()
            assert await first == (200, b"{}") and await later == (200, b"{}")
            assert server.connections == 1 and client.open_connections() == 1
    finally:
        client.close()


async def test_idle_connections_close_on_time_without_any_traffic() -> None:
    closed: list[int] = []

    async def serve(reader, writer, n) -> None:
        try:
            while True:
                await server.read_request(reader)
                await asyncio.sleep(0.02)
                writer.write(OK)
        finally:
            closed.append(n)

    client = _limited(idle_connection_seconds=0.2)
    try:
        async with wire(serve) as server:
            await asyncio.gather(*(post(client, server.url) for _ in range(5)))  # a burst
            assert client.open_connections() == 5
            for _ in range(100):  # and then nothing at all
                if len(closed) == 5:
                    break
                await asyncio.sleep(0.02)
            assert sorted(closed) == [1, 2, 3, 4, 5]
            assert client.open_connections() == 0
    finally:
        client.close()
