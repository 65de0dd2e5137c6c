"""A client that stops reading its answer (`server.send_timeout`, send_deadline.py).

The upstream is a raw asyncio server that streams content events as fast as it may; the
client is a socket that sends its request and then reads nothing (a frozen editor, a
laptop gone to sleep with its socket open). Before the send deadline, the router's
write waited for a drain that never came: the client's connection, the upstream
connection and the request were held for as long as the client's socket stayed open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import structlog.testing

from router.client_connection import Connection
from tests.configs import key, model, route, routes_yaml
from tests.conftest import SIM_A, Stack
from tests.integration.test_upstream_limits import CONTENT, _flood, bad_upstream

pytestmark = pytest.mark.timeout(60)
BOTH_LOOPS = True  # the router serves on uvloop, whose transports pause and buffer apart

_PIECE = CONTENT * 64  # about 4.5 KB of events a chunk
_CHUNK = b"%x\r\n%b\r\n" % (len(_PIECE), _PIECE)
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def _endless_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(_HEAD)
    await _flood(writer, _CHUNK)


async def _router(stack: Stack, bad_url: str, *, send_timeout: float) -> str:
    """A router with one route, on the misbehaving upstream; its idle timeout longer than
    any test here, so no upstream timeout ends a stream before the send deadline does."""
    return await stack.router(
        routes_yaml(
            keys=[key("bad", bad_url, api_key=SIM_A.api_key)],
            models={"gpt-4o": model(route("bad", "gpt-4o"))},
            timeouts={"idle": 60},
            server={"send_timeout": send_timeout},
        )
    )


async def _read_slowly(client: socket.socket, *, piece: int, every: float, times: int) -> None:
    """`times` reads of up to `piece` bytes, `every` seconds apart; each gets some."""
    loop = asyncio.get_running_loop()
    for _ in range(times):
        assert await loop.sock_recv(client, piece)
        await asyncio.sleep(every)


async def _silent_client(router_url: str, *, stream: bool) -> socket.socket:
    """A client that sends a request and never reads: its receive buffer kept small, so
    the router's side fills soon."""
    host, port = router_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                       "stream": stream}).encode()  # fmt: skip
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode() + body)
    return sock


async def _metric(router_url: str, name: str, **labels: str) -> float:
    host, port = router_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    page = (await reader.read()).decode()
    writer.close()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in page.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} on the page")


async def test_a_client_that_reads_nothing_of_a_stream_is_cut_off(stack):
    async with bad_upstream(_endless_stream) as (bad_url, bad):
        router_url = await _router(stack, bad_url, send_timeout=1)
        client = await _silent_client(router_url, stream=True)
        try:
            async with asyncio.timeout(20):
                await bad.finished.wait()  # the router let go of the upstream
            received = await _read_to_the_end(client)
            # A reset, never a stream that looks complete.
            assert received.reset
            assert received.data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert not received.data.endswith(b"0\r\n\r\n")
        finally:
            client.close()
        assert not bad.completed  # the flood was cut, not read to its end
        # Charged to the client: a cancelled request, not an upstream failure.
        await asyncio.sleep(0.1)
        assert await _metric(router_url, "llm_router_requests_total", outcome="cancelled") == 1
        assert (
            await _metric(
                router_url, "llm_router_upstream_attempts_total", route="bad/gpt-4o", outcome="ok"
            )
            == 1
        )


def _answer(size: int) -> bytes:
    body = json.dumps({
        "id": "c", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "x" * size}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()  # fmt: skip
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


async def _large_answer(writer: asyncio.StreamWriter) -> None:
    writer.write(_answer(4 << 20))


async def _charged_to_the_client(logs: list[dict], router_url: str) -> None:
    """The request is logged 499 `cancelled`, with its route and tokens, and not served."""
    [logged] = [e for e in logs if e["event"] == "request"]
    assert (logged["status"], logged["outcome"]) == (499, "cancelled")
    assert (logged["route"], logged["tokens_in"], logged["tokens_out"]) == ("bad/gpt-4o", 1, 1)
    assert await _metric_or_zero(router_url, outcome="cancelled") == 1
    assert await _metric_or_zero(router_url, outcome="served") == 0


async def test_a_client_that_reads_nothing_of_an_answer_is_cut_off(stack):
    """A whole answer goes the same way, and is charged the same way: it is served only
    once all of it has gone to the client's connection, as a stream once its end has
    (before, it was logged served when the handler handed it over, unwritten), and its
    tokens and cost are counted all the same."""
    async with bad_upstream(_large_answer) as (bad_url, _bad):
        router_url = await _router(stack, bad_url, send_timeout=1)
        with structlog.testing.capture_logs() as logs:
            client = await _silent_client(router_url, stream=False)
            try:
                async with asyncio.timeout(20):
                    while not any(e["event"] == "client_send_timeout" for e in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                received = await _read_to_the_end(client)
                async with asyncio.timeout(10):  # the request ends just after the reset
                    while not any(e["event"] == "request" for e in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
            finally:
                client.close()
    assert received.reset  # at once: no kernel left sending megabytes nobody reads
    assert received.data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(received.data) < 4 << 20
    await _charged_to_the_client(logs, router_url)


async def test_a_client_that_leaves_halfway_through_an_answer_is_charged_with_it(stack, caplog):
    """A client that reads part of a large answer and resets its connection: 499
    `cancelled` with the route and the tokens, not served, and nothing at error level."""
    async with bad_upstream(_large_answer) as (bad_url, _bad):
        router_url = await _router(stack, bad_url, send_timeout=30)
        with structlog.testing.capture_logs() as logs:
            client = await _silent_client(router_url, stream=False)
            got = await _read_until(client, lambda data: len(data) >= 100_000)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # a reset, halfway through
            async with asyncio.timeout(10):
                while not any(e["event"] == "request" for e in logs):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    await _charged_to_the_client(logs, router_url)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


async def test_an_upstream_content_type_that_is_no_header_text_is_not_passed_on(stack):
    """A byte that is not UTF-8 in the upstream's Content-Type: the client gets its
    answer as JSON. (aiohttp's C writer dropped the byte; its Python one failed the
    answer, which was then logged as the client's cancellation.)"""
    body = json.loads(_answer(10).partition(b"\r\n\r\n")[2])

    async def odd_type(writer: asyncio.StreamWriter) -> None:
        data = json.dumps(body).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; x=\xe9\r\n"
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data)

    async with bad_upstream(odd_type) as (bad_url, _bad):
        router_url = await _router(stack, bad_url, send_timeout=30)
        with structlog.testing.capture_logs() as logs:
            client = await _silent_client(router_url, stream=False)
            try:
                data = await _read_until(
                    client, lambda got: b"\r\n\r\n" in got and got.endswith(b"}")
                )
            finally:
                client.close()
    head, _, answer = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(answer) == body
    [logged] = [e for e in logs if e["event"] == "request"]
    assert (logged["status"], logged["outcome"]) == (200, "served")


async def _metric_or_zero(router_url: str, *, outcome: str) -> float:
    try:
        return await _metric(router_url, "llm_router_requests_total", outcome=outcome)
    except AssertionError:
        return 0.0


@dataclass
class Received:
    data: bytes
    reset: bool  # the connection ended with a reset, not a close


async def _read_until(client: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    """What the client reads until `done` says it has enough (10 s at most)."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(10):
        while not done(data):
            data += await loop.sock_recv(client, 65536)
    return data


async def _read_to_the_end(client: socket.socket) -> Received:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(10):
        try:
            while piece := await loop.sock_recv(client, 65536):
                data += piece
        except ConnectionResetError:
            return Received(data, reset=True)
    return Received(data, reset=False)


async def test_a_reader_slower_than_its_upstream_keeps_its_stream_until_it_stops(
    stack, monkeypatch
):
    """Each period of the deadline in which the client takes something starts another:
    a slow link is not a client that stopped reading; once it stops, it is cut. The
    upstream sends faster than the client reads, so the router keeps writing while
    paused: what is still queued may then grow although the client reads. The first
    version measured that and cut such a client; what the client has acknowledged is
    what tells. The router's send buffer is kept small, as a slow link's
    is (on loopback the kernel grows it to megabytes and nothing would pause)."""
    pauses: list[float] = []
    made, paused = Connection.connection_made, Connection.pause_writing

    def small_buffer(self: Connection, transport: asyncio.BaseTransport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        made(self, transport)

    def counted(self: Connection) -> None:
        pauses.append(self._loop.time())
        paused(self)

    monkeypatch.setattr(Connection, "connection_made", small_buffer)
    monkeypatch.setattr(Connection, "pause_writing", counted)

    async def paced(writer: asyncio.StreamWriter) -> None:
        writer.write(_HEAD)
        piece = b"%x\r\n%b\r\n" % (len(CONTENT) * 16, CONTENT * 16)  # about 1 KB
        for _ in range(20_000):  # about 100 KB/s
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)

    async with bad_upstream(paced) as (bad_url, bad):
        router_url = await _router(stack, bad_url, send_timeout=1.2)
        with structlog.testing.capture_logs() as logs:
            client = await _silent_client(router_url, stream=True)
            loop = asyncio.get_running_loop()
            try:
                # 5 s of 2 KB every 0.2 s, about 10 KB/s. Its kernel announces the room
                # a read makes only now and then (on loopback, whose segments are 64 KB,
                # up to 0.6 s apart here: measured), so the deadline is twice that.
                await _read_slowly(client, piece=2048, every=0.2, times=25)
                read_for = loop.time() - pauses[0] if pauses else 0.0
                assert not any(e["event"] == "client_send_timeout" for e in logs)
                async with asyncio.timeout(20):  # now it reads nothing more: cut
                    while not any(e["event"] == "client_send_timeout" for e in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            finally:
                client.close()
        async with asyncio.timeout(10):
            await bad.finished.wait()  # and the upstream let go
    assert read_for > 3 * 1.2  # it was paused, for periods on end, while it read
