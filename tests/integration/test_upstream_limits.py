"""What one upstream response may make the router hold (`limits:` in routes.yaml), through
the router: a misbehaving upstream (a raw asyncio server) is the first route and the
simulator the second. A breach before the client has a byte fails over; after it, the
stream ends with an error event and a clean end."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest

from tests.configs import key, model, route, routes_yaml, sim_key
from tests.conftest import HI, SIM_B

pytestmark = pytest.mark.timeout(30)

Misbehave = Callable[[asyncio.StreamWriter], Awaitable[None]]
_FLOOD = 64 << 20  # what a misbehaving upstream writes at most, if nobody stops it
LIMITS = {"max_head_bytes": 16384, "max_body_bytes": 1 << 20, "max_event_bytes": 65536}
CONTENT = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


async def _flood(writer: asyncio.StreamWriter, piece: bytes) -> None:
    written = 0
    while written < _FLOOD:
        writer.write(piece)
        written += len(piece)
        await writer.drain()


def _bomb() -> bytes:
    return gzip.compress(bytes(_FLOOD), 9)  # 64 MiB of zeros in about 64 KiB


class BadUpstream:
    """Reads one request per connection and answers with `misbehave`; notes whether it
    got to the end of it (a flood that ran to its end was read, not refused)."""

    def __init__(self, misbehave: Misbehave) -> None:
        self._misbehave = misbehave
        self.finished = asyncio.Event()
        self.completed = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await self._misbehave(writer)
            self.completed = True
            async with asyncio.timeout(10):  # the response never ends on its own
                await reader.read()  # until the router closes the connection
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the router let go
        finally:
            self.finished.set()
            writer.close()


@asynccontextmanager
async def bad_upstream(misbehave: Misbehave) -> AsyncIterator[tuple[str, BadUpstream]]:
    bad = BadUpstream(misbehave)
    server = await asyncio.start_server(bad.serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", bad
    finally:
        server.close()
        await server.wait_closed()


def _config(bad_url: str, sim_url: str) -> str:
    return routes_yaml(
        keys=[key("bad", bad_url, api_key="sk-test-bad-0001"), sim_key(SIM_B, sim_url)],
        models={"gpt-4o": model(route("bad", "gpt-4o"), route("b", "gpt-4o", priority=2))},
        timeouts={"first_byte": 60, "idle": 60},  # longer than the test: no timeout saves it
        limits=LIMITS,
    )


async def _endless_header(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    await _flood(writer, b"v" * 65536)


async def _many_headers(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-F: v\r\n" * 500 + b"Content-Length: 2\r\n\r\n{}")


def _endless_body(status: int) -> Misbehave:
    async def misbehave(writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
        writer.write(head % status + b"\r\n\r\n" + b'10\r\n{"choices": ["x"\r\n')
        await _flood(writer, b"10000\r\n" + b" " * 65536 + b"\r\n")

    return misbehave


async def _gzip_bomb(writer: asyncio.StreamWriter) -> None:
    bomb = _bomb()
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    writer.write(f"{head}Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb)


async def _gzip_then_junk(writer: asyncio.StreamWriter) -> None:
    """A whole gzip answer, then bytes that are no part of it, without end: zlib keeps
    them aside undecoded, so no limit on decoded bytes sees them."""
    answer = gzip.compress(b'{"choices": []}')
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(answer), answer))
    await _flood(writer, b"10000\r\n" + b"j" * 65536 + b"\r\n")


async def _endless_first_event(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {")
    await _flood(writer, b"x" * 65536)


async def _endless_pings(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
    await _flood(writer, b": ping\n\n" * 8192)


# (what the upstream does, whether the client streams, whether it floods: a flood the
# router lets run to its end was not bounded).
BEFORE = {
    "endless-header": (_endless_header, False, True),
    "endless-header-stream": (_endless_header, True, True),
    "many-headers": (_many_headers, False, False),
    "endless-200-body": (_endless_body(200), False, True),
    "endless-500-body": (_endless_body(500), False, True),
    "endless-error-body-stream": (_endless_body(429), True, True),
    "gzip-bomb": (_gzip_bomb, False, False),
    "gzip-then-junk": (_gzip_then_junk, False, True),
    "endless-first-event": (_endless_first_event, True, True),
    "endless-pings": (_endless_pings, True, True),
}


@pytest.mark.parametrize("case", BEFORE)
async def test_a_breach_before_the_first_byte_fails_over(stack, case: str) -> None:
    misbehave, stream, floods = BEFORE[case]
    _, sim_url = await stack.sim(SIM_B)
    async with bad_upstream(misbehave) as (bad_url, bad):
        url = await stack.router(_config(bad_url, sim_url))
        body = {"model": "gpt-4o", "messages": HI, "stream": stream}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/chat/completions", json=body) as response,
        ):
            text = await response.text()
            assert response.status == 200, text
            assert response.headers["x-router-route"] == "b/gpt-4o"
            assert response.headers["x-router-attempts"] == "2"
        async with asyncio.timeout(5):
            await bad.finished.wait()  # the router let go of it
        assert not (floods and bad.completed)  # ... long before the flood's end


def _events(text: str) -> list[dict]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def _content_then(writer: asyncio.StreamWriter, rest: bytes, piece: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + CONTENT + rest)
    await _flood(writer, piece)


async def _endless_later_event(writer: asyncio.StreamWriter) -> None:
    await _content_then(writer, b'data: {"id":"c","choices":[{"delta":{"content":"', b"y" * 65536)


async def _bomb_in_the_stream(writer: asyncio.StreamWriter) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    start = packer.compress(CONTENT) + packer.flush(zlib.Z_SYNC_FLUSH)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
    writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(start), start))
    await writer.drain()
    await asyncio.sleep(0.2)  # the content event goes to the client on its own
    # Blank lines, not one endless event: the body is decoded a piece at a time, so an
    # event past its limit would end the stream before the inflate bound did.
    bomb = packer.compress(b"\n" * _FLOOD) + packer.flush()
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(bomb), bomb))


@pytest.mark.parametrize(
    ("misbehave", "reason"),
    [(_endless_later_event, "passed 65536 bytes"), (_bomb_in_the_stream, "inflates more")],
    ids=["endless-event", "gzip-bomb"],
)
async def test_a_breach_after_the_first_byte_ends_the_stream_with_an_error_event(
    stack, misbehave: Misbehave, reason: str
) -> None:
    _, sim_url = await stack.sim(SIM_B)
    async with bad_upstream(misbehave) as (bad_url, bad):
        url = await stack.router(_config(bad_url, sim_url))
        body = {"model": "gpt-4o", "messages": HI, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/chat/completions", json=body) as response,
        ):
            assert response.status == 200
            assert response.headers["x-router-route"] == "bad/gpt-4o"
            text = await response.text()  # the stream ends: no hang, no second response
        async with asyncio.timeout(5):
            await bad.finished.wait()
        assert not bad.completed or misbehave is _bomb_in_the_stream  # no flood ran out
    events = _events(text)  # every event parses: none is glued to half of another
    assert events[0]["choices"][0]["delta"]["content"] == "Hi"
    assert len(events) == 2 and reason in events[1]["error"]["message"]
    assert "HTTP/1.1" not in text
