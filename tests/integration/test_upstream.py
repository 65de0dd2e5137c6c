"""The upstream client's body timeouts, against a raw aiohttp server on 127.0.0.1 that
sends a response head and then stalls, trickles or finishes on command."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from router.errors import UpstreamConnectionError, UpstreamTimeout
from router.types import Key, Route, Timeouts
from router.upstream import Upstream, UpstreamResponse
from router.upstream.client import HttpClient
from tests.conftest import raw_upstream

KEY = Key(name="k", provider="openai", api_base="http://127.0.0.1", api_key="sk-test-0000000000")
ROUTE = Route(key=KEY, model="m")


class Script:
    """What the server does after the head: write these pieces, `gap` seconds apart,
    then either end the body or hold the connection open (`stall`)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = [b"one"]
        self.gap = 0.0
        self.stall = False
        self.release = asyncio.Event()


@pytest.fixture
async def upstream_url() -> AsyncIterator[tuple[str, Script]]:
    script = Script()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in script.pieces:
            await response.write(piece)
            await asyncio.sleep(script.gap)
        if script.stall:
            await script.release.wait()
        await response.write_eof()
        return response

    async with raw_upstream("/v1/chat/completions", handle) as base:
        try:
            yield f"{base}/v1/chat/completions", script
        finally:
            script.release.set()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    client = HttpClient()
    upstream = Upstream(client, Timeouts())
    try:
        yield upstream
    finally:
        upstream.close()
        client.close()


async def _open(upstream: Upstream, url: str) -> UpstreamResponse:
    return await upstream.send(ROUTE, url, b"{}", {}, head_timeout=5)


async def test_a_stalled_body_read_times_out_in_its_phase(upstream, upstream_url) -> None:
    url, script = upstream_url
    script.stall = True
    response = await _open(upstream, url)
    started = time.perf_counter()
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await response.read(0.3)
    finally:
        response.finish()
    assert caught.value.phase == "read"
    assert 0.25 <= time.perf_counter() - started < 2.0


async def test_a_stalled_stream_times_out_after_the_chunks_it_sent(upstream, upstream_url) -> None:
    url, script = upstream_url
    script.pieces, script.stall = [b"a", b"b"], True
    response = await _open(upstream, url)
    try:
        received = b""
        with pytest.raises(UpstreamTimeout) as caught:
            while True:
                received += await response.next_chunk(0.3, phase="idle")
    finally:
        response.finish()
    assert received == b"ab"
    assert caught.value.phase == "idle"


async def test_the_idle_timeout_counts_from_each_read(upstream, upstream_url) -> None:
    """Pieces 0.2 s apart, over 1 s in all, never wait 0.5 s: no timeout."""
    url, script = upstream_url
    script.pieces, script.gap = [b"x"] * 6, 0.2
    response = await _open(upstream, url)
    try:
        received = b""
        while chunk := await response.next_chunk(0.5):
            received += chunk
    finally:
        response.finish()
    assert received == b"x" * 6


async def test_time_spent_away_from_reads_does_not_count(upstream, upstream_url) -> None:
    """A slow client holds the relay between reads; that is not upstream idleness."""
    url, script = upstream_url
    script.pieces, script.gap = [b"a", b"b"], 0.1
    response = await _open(upstream, url)
    try:
        assert await response.next_chunk(0.2) == b"a"
        await asyncio.sleep(0.5)  # longer than the timeout, with no read waiting
        received = b""
        while chunk := await response.next_chunk(0.2):
            received += chunk
    finally:
        response.finish()
    assert received == b"b"


async def test_a_shorter_timeout_after_a_longer_one_is_honoured(upstream, upstream_url) -> None:
    url, script = upstream_url
    script.pieces, script.stall = [b"a"], True
    response = await _open(upstream, url)
    started = time.perf_counter()
    try:
        assert await response.next_chunk(30) == b"a"
        with pytest.raises(UpstreamTimeout):
            await response.next_chunk(0.2)
    finally:
        response.finish()
    assert time.perf_counter() - started < 5


async def test_a_stalled_head_times_out_as_first_byte(upstream) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    async with raw_upstream("/", silent) as base:
        with pytest.raises(UpstreamTimeout) as caught:
            await upstream.send(ROUTE, f"{base}/", b"{}", {}, head_timeout=0.2)
    assert caught.value.phase == "first_byte"


async def test_a_caller_cancelled_while_waiting_for_the_head_stays_cancelled(upstream) -> None:
    """A client that leaves is not an upstream timeout, and leaves no deadline behind."""
    arrived = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    async with raw_upstream("/", silent) as base:
        sending = asyncio.create_task(upstream.send(ROUTE, f"{base}/", b"{}", {}, head_timeout=5))
        await asyncio.wait_for(arrived.wait(), 5)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
    assert upstream._deadlines.pending() == 0


async def test_a_head_in_time_leaves_no_deadline_pending(upstream, upstream_url) -> None:
    url, _ = upstream_url
    response = await _open(upstream, url)
    try:
        assert await response.read(5) == b"one"
    finally:
        response.finish()
    assert upstream._deadlines.pending() == 0


async def test_the_reads_after_a_prompt_head_keep_its_deadline(upstream, upstream_url) -> None:
    """One timer per attempt: the head's, moved on by each read rather than replaced."""
    url, _ = upstream_url
    response = await _open(upstream, url)
    try:
        timer = response._timer
        assert timer is not None
        assert upstream._deadlines.pending() == 1
        assert await response.read(5) == b"one"
        assert response._timer is timer
    finally:
        response.finish()
    assert upstream._deadlines.pending() == 0


async def test_a_head_slower_than_idle_still_has_its_whole_first_byte_timeout() -> None:
    """The attempt's timer first fires `idle` after the send; a head that is late for
    that but not for first_byte is waited for, then read as usual."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(body=b"late")

    client = HttpClient()
    upstream = Upstream(client, Timeouts(idle=0.1))
    try:
        async with raw_upstream("/", slow) as base:
            response = await upstream.send(ROUTE, f"{base}/", b"{}", {}, head_timeout=3)
            try:
                assert response.status == 200
                assert await response.read(1) == b"late"
            finally:
                response.finish()
            with pytest.raises(UpstreamTimeout) as caught:
                await upstream.send(ROUTE, f"{base}/", b"{}", {}, head_timeout=0.3)
            assert caught.value.phase == "first_byte"
        assert upstream._deadlines.pending() == 0
    finally:
        upstream.close()
        client.close()


async def test_a_refused_connection_is_a_connection_error(upstream) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: the connect is refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(UpstreamConnectionError):
            await upstream.send(ROUTE, url, b"{}", {}, head_timeout=2)


async def test_cookies_an_upstream_sets_are_never_sent_back(upstream) -> None:
    """One session serves every key: a cookie from one key's answer (Cloudflare's
    __cf_bm on OpenAI's) must not ride along with another key's requests."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        return web.json_response({}, headers={"Set-Cookie": "__cf_bm=abc; Path=/; HttpOnly"})

    async with raw_upstream("/v1/chat/completions", handle) as base:
        # By name: aiohttp's default cookie jar ignores cookies from IP addresses.
        url = base.replace("127.0.0.1", "localhost") + "/v1/chat/completions"
        for _ in range(2):
            response = await upstream.send(ROUTE, url, b"{}", {}, head_timeout=5)
            try:
                await response.read(5)
            finally:
                response.finish()
    assert seen == [None, None]
