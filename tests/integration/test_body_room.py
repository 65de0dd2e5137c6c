"""The bodies of the requests in flight share one bound, server.max_body_bytes_total
(router/handlers/body_room.py): counted as they arrive, past it a request is refused
with a 503 in its client's dialect, and the room comes back as requests end, however
they end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.configs import key, model, route, routes_yaml, sim_key
from tests.conftest import raw_upstream
from tests.integration.test_count_tokens import ANT_A

pytestmark = pytest.mark.timeout(30)

LIMIT = 100_000  # server.max_body_bytes
BIG = 90_000  # a body this size or a little more: two fit in 200,000, not three
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


FIRST_EVENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
)


def body(size: int, *, stream: bool = False) -> bytes:
    """A chat request of about `size` bytes."""
    text = "x" * max(0, size - 80)
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    return json.dumps(request | ({"stream": True} if stream else {})).encode()


def config(upstream: str, total: int) -> str:
    return routes_yaml(
        keys=[key("k", f"{upstream}/v1", api_key="sk-test-upstream-000001")],
        models={"gpt-4o": model(route("k", "gpt-4o"))},
        server={"max_body_bytes": LIMIT, "max_body_bytes_total": total},
    )


class Holding:
    """An upstream that holds every large request until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.more = asyncio.Event()  # another request is held
        self.held = 0
        self.sizes: list[int] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.sizes.append(len(body))
        if len(body) <= 50_000:
            return web.json_response(ANSWER)
        if b'"stream": true' in body:
            return await self._stream(request)
        await self._hold()
        return web.json_response(ANSWER)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """The first event at once, the rest once released."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(FIRST_EVENT)
        await self._hold()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _hold(self) -> None:
        self.held += 1
        self.more.set()
        await self.release.wait()

    async def holding(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.held < count:
                self.more.clear()
                await self.more.wait()


@asynccontextmanager
async def held_upstream() -> AsyncIterator[tuple[Holding, str]]:
    upstream = Holding()
    async with raw_upstream("/v1/chat/completions", upstream.handle) as url:
        try:
            yield upstream, url
        finally:
            upstream.release.set()


async def post(url: str, data: bytes, path: str = "/v1/chat/completions") -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=data, headers={"Content-Type": "application/json"}) as r,
    ):
        return r.status, r.headers, await r.json()


async def room_metrics(url: str) -> tuple[float, float]:
    """(llm_router_request_body_bytes, llm_router_body_room_refusals_total) now."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        page = await response.text()
    values = {}
    for line in page.splitlines():
        name, _, value = line.partition(" ")
        values[name] = value
    return (
        float(values["llm_router_request_body_bytes"]),
        float(values["llm_router_body_room_refusals_total"]),
    )


async def settled(url: str, held: float) -> None:
    """Wait until the room holds `held` bytes: a request ends just after its answer."""
    async with asyncio.timeout(10):
        while (await room_metrics(url))[0] != held:  # noqa: ASYNC110 (read by scrapes)
            await asyncio.sleep(0.02)


async def test_a_body_past_the_total_is_refused_in_the_clients_dialect(stack):
    async with held_upstream() as (upstream, upstream_url):
        url = await stack.router(config(upstream_url, 200_000))
        first = [asyncio.create_task(post(url, body(BIG))) for _ in range(2)]
        await upstream.holding(2)
        assert (await room_metrics(url))[0] == 2 * len(body(BIG))

        status, headers, error = await post(url, body(BIG))
        assert status == 503
        assert headers["Retry-After"] == "1"  # the SDKs retry it by themselves
        assert error["error"]["code"] == "router_out_of_resources"
        assert "server.max_body_bytes_total" in error["error"]["message"]
        status, _, error = await post(url, body(BIG), "/v1/messages")
        assert status == 503 and error["type"] == "error"  # Anthropic's shape
        assert "server.max_body_bytes_total" in error["error"]["message"]
        assert upstream.sizes.count(len(body(BIG))) == 2  # the refused never went on

        # A small body still fits beside the two held ones.
        assert (await post(url, body(1_000)))[0] == 200

        upstream.release.set()
        assert [(await task)[0] for task in first] == [200, 200]
        await settled(url, 0)
        assert (await post(url, body(BIG)))[0] == 200
        await settled(url, 0)
        assert (await room_metrics(url))[1] == 2


async def raw_request(url: str, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


def head(length: int | None, *extra: str) -> str:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1",
             "Content-Type: application/json", framing, *extra]  # fmt: skip
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_expect_100_continue_is_not_answered_without_room(stack):
    async with held_upstream() as (upstream, upstream_url):
        url = await stack.router(config(upstream_url, 150_000))
        held = asyncio.create_task(post(url, body(BIG)))
        await upstream.holding(1)

        reader, writer = await raw_request(url, head(BIG, "Expect: 100-continue"))
        try:
            async with asyncio.timeout(10):
                first = await reader.readuntil(b"\r\n\r\n")
                length = int(first.lower().partition(b"content-length:")[2].split(b"\r\n")[0])
                rest = await reader.readexactly(length)
        finally:
            writer.close()
        assert first.startswith(b"HTTP/1.1 503 ")  # and no 100 Continue before it
        # The body was never asked for: what the client sends next is no request.
        assert b"connection: close" in first.lower()
        assert "server.max_body_bytes_total" in json.loads(rest)["error"]["message"]

        upstream.release.set()
        assert (await held)[0] == 200


async def test_a_slow_upload_holds_only_what_it_has_sent(stack):
    """Uploads that declare the largest body and send a byte now and then must not keep
    everyone else out: each holds what has come."""
    async with held_upstream() as (upstream, upstream_url):
        upstream.release.set()  # nothing is held upstream here
        url = await stack.router(config(upstream_url, 150_000))
        writers = []
        try:
            for _ in range(3):
                _, writer = await raw_request(url, head(LIMIT))
                writer.write(b"{" * 100)
                writers.append(writer)
            await settled(url, 300)
            assert (await post(url, body(BIG)))[0] == 200  # 300 + 90,000 fit in 150,000
        finally:
            for writer in writers:
                writer.close()
        await settled(url, 0)


async def test_a_body_that_would_pass_the_total_as_it_arrives_is_refused_there(stack):
    """A chunked upload is counted piece by piece: the piece that would pass the total
    gets the 503 (aiohttp reads out and drops the rest)."""
    async with held_upstream() as (upstream, upstream_url):
        url = await stack.router(config(upstream_url, 150_000))
        held = asyncio.create_task(post(url, body(BIG)))
        await upstream.holding(1)

        reader, writer = await raw_request(url, head(None))
        try:
            whole = body(80_000)
            for start in range(0, len(whole), 10_000):
                piece = whole[start : start + 10_000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.02)  # a read each
            async with asyncio.timeout(10):
                first = await reader.readuntil(b"\r\n\r\n")
        except ConnectionError:
            first = b""  # the router closed before the test sent it all: read what came
        finally:
            writer.close()
        assert first.startswith(b"HTTP/1.1 503 "), first

        upstream.release.set()
        assert (await held)[0] == 200
        await settled(url, 0)
        assert (await room_metrics(url))[1] == 1


async def test_a_client_gone_mid_upload_gives_its_room_back(stack):
    async with held_upstream() as (upstream, upstream_url):
        url = await stack.router(config(upstream_url, 200_000))
        for _ in range(5):
            _, writer = await raw_request(url, head(BIG))
            writer.write(b"{" * 1000)
            await writer.drain()
            await settled(url, 1000)
            writer.close()
            await settled(url, 0)
        # Both halves of the room are free: two held requests fit at once.
        first = [asyncio.create_task(post(url, body(BIG))) for _ in range(2)]
        await upstream.holding(2)
        upstream.release.set()
        assert [(await task)[0] for task in first] == [200, 200]


async def test_count_tokens_reads_its_body_twice_and_holds_it_once(stack):
    sim, _ = await stack.sim(ANT_A)
    text = routes_yaml(
        keys=[sim_key(ANT_A, sim.root, provider="anthropic")],
        models={"claude": model(route("ant-a", "claude-sonnet-4-6"))},
        server={"max_body_bytes": LIMIT, "max_body_bytes_total": 2 * LIMIT},
    )
    url = await stack.router(text)
    request = {"model": "claude", "messages": [{"role": "user", "content": "hi " * 20_000}]}
    counting = "/v1/messages/count_tokens"
    for _ in range(3):
        status, _, counted = await post(url, json.dumps(request).encode(), counting)
        assert status == 200 and counted["input_tokens"] > 0
    await settled(url, 0)


async def stream_until_first_event(url: str, data: bytes) -> tuple[int, bytes]:
    """Opens a stream, reads its first event, and keeps reading to its end."""
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", data=data, headers=headers) as response,
    ):
        first = await response.content.readuntil(b"\n\n")
        await response.read()
        return response.status, first


async def test_a_stream_gives_its_room_back_once_committed(stack):
    """A long generation does not hold its body's room to its end: once the client has
    the stream's head nothing sends the body again, so the room goes back then."""
    async with held_upstream() as (upstream, upstream_url):
        url = await stack.router(config(upstream_url, 200_000))
        streams = [
            asyncio.create_task(stream_until_first_event(url, body(BIG, stream=True)))
            for _ in range(2)
        ]
        await upstream.holding(2)
        await settled(url, 0)  # both streams are open, and hold no room

        task = asyncio.create_task(post(url, body(BIG)))  # fits beside them
        await upstream.holding(3)
        assert (await room_metrics(url))[0] == len(body(BIG))
        upstream.release.set()
        assert (await task)[0] == 200
        assert [await stream for stream in streams] == [(200, FIRST_EVENT)] * 2
        await settled(url, 0)
        assert (await room_metrics(url))[1] == 0  # none refused
