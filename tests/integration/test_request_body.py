"""A request body that has all arrived is taken from aiohttp's buffer at once; any
other goes through request.read(), and either way the handler gets the bytes sent."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader

from router.client_connection import Connection
from router.handlers.request_body import TAKE, arrived
from tests.configs import key, model, route, routes_yaml
from tests.conftest import SIM_A
from tests.integration.test_bad_input import raw_exchange
from tests.integration.test_secrets import raw_request

pytestmark = pytest.mark.skipif(not TAKE, reason="another aiohttp: every body is read()")


@asynccontextmanager
async def _server(max_size: int = 1024**2) -> AsyncIterator[tuple[int, list[str]]]:
    """A server whose handler answers with the body's length and digest, and notes for
    each request how it got the body: `taken`, or `read`."""
    ways: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = arrived(request)
        ways.append("read" if body is None else "taken")
        if body is None:
            body = await request.read()
        assert await request.read() is body  # kept, as read() keeps it
        assert request.content.at_eof()
        digest = hashlib.sha256(body).hexdigest()[:16]
        return web.Response(text=f"{len(body)} {digest}")

    app = web.Application(client_max_size=max_size)
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], ways
    finally:
        await runner.cleanup()


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body),
        extra,
        body,
    )


def _answer(body: bytes) -> bytes:
    return b"%d %b" % (len(body), hashlib.sha256(body).hexdigest()[:16].encode())


def _bodies(raw: bytes) -> list[bytes]:
    """The bodies of the plain-text answers in `raw`, in order."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
        out.append(raw[:length])
        raw = raw[length:]
    return out


async def test_a_body_that_arrived_with_its_head_is_taken_and_the_connection_goes_on():
    """Head and body in one write: taken from the buffer, the same bytes read() gives;
    a request pipelined behind it on the same connection is read and answered too."""
    first, second = b'{"model":"gpt-4o"}', b"x" * 3000
    async with _server() as (port, ways):
        raw = await raw_request(
            f"http://127.0.0.1:{port}", _post(first) + _post(second, b"Connection: close\r\n")
        )
    assert _bodies(raw) == [_answer(first), _answer(second)]
    assert ways == ["taken", "taken"]


async def test_a_body_still_arriving_is_read():
    """The handler runs once the head is in: a body that follows later is read()."""
    body = b'{"model":"gpt-4o","messages":[]}'
    head = f"POST / HTTP/1.1\nHost: x\nContent-Length: {len(body)}\nConnection: close\n"
    async with _server() as (port, ways):
        status, answer = await raw_exchange(f"http://127.0.0.1:{port}", head, body)
    assert (status, answer) == (200, _answer(body))
    assert ways == ["read"]


@pytest.mark.parametrize(
    ("request_bytes", "body", "way"),
    [
        (  # chunked: read() keeps the chunks' splits
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
            "read",
        ),
        (  # compressed: what the parser decompressed
            _post(
                gzip.compress(b'{"a":1}' * 50), b"Content-Encoding: gzip\r\nConnection: close\r\n"
            ),
            b'{"a":1}' * 50,
            "taken",
        ),
        (  # no body at all
            _post(b"", b"Connection: close\r\n"),
            b"",
            "read",
        ),
    ],
    ids=["chunked", "gzip", "empty"],
)
async def test_other_bodies_get_the_bytes_sent(request_bytes, body, way):
    async with _server() as (port, ways):
        raw = await raw_request(f"http://127.0.0.1:{port}", request_bytes)
    assert _bodies(raw) == [_answer(body)]
    assert ways == [way]


async def test_a_body_larger_than_the_buffer_is_whole_and_the_next_request_is_served():
    """Several times the reader's buffer limit (2 x 64 KiB), sent at once with a request
    behind it: whether taken or read, the handler gets every byte, and reading resumes
    for the request that follows."""
    big = bytes(range(256)) * 4096  # 1 MiB
    async with _server(max_size=4 * 1024**2) as (port, ways):
        raw = await raw_request(
            f"http://127.0.0.1:{port}", _post(big) + _post(b"{}", b"Connection: close\r\n")
        )
    assert _bodies(raw) == [_answer(big), _answer(b"{}")]
    assert len(ways) == 2 and ways[1] == "taken"


async def test_a_body_over_the_size_limit_is_left_to_read_and_its_413():
    body = b"y" * 2000
    async with _server(max_size=1000) as (port, ways):
        raw = await raw_request(f"http://127.0.0.1:{port}", _post(body, b"Connection: close\r\n"))
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert ways == ["read"]


async def test_the_router_takes_a_body_that_arrived_without_read_s_loop(stack, monkeypatch):
    """Through the router's own server (its front door's connection class): a request
    that arrives whole never goes through StreamReader.readany(), and is answered."""
    _sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(
        routes_yaml(
            keys=[key("a", sim_url, api_key=SIM_A.api_key)],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )
    readers: list[type] = []  # the protocol each read was for
    readany = StreamReader.readany

    async def counted(self: StreamReader) -> bytes:
        readers.append(type(self._protocol))
        return await readany(self)

    monkeypatch.setattr(StreamReader, "readany", counted)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    raw = await raw_request(
        url,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        b"application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
        % (len(body), body.encode()),
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:300]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["choices"][0]["message"]["content"]
    # The simulator, an aiohttp server in this process, reads its request with read():
    # the spy sees it. The router's front door never does.
    assert readers and Connection not in readers
