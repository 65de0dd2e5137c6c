"""A stream is bounded in time however its upstream behaves: no more than `idle`
seconds without a whole event, and `timeouts.stream` in all. Each ends with an error
event the client sees, as any stream that fails after its head does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from router.sim import SimKey
from tests.configs import key, model, route, routes_yaml, sim_key
from tests.conftest import HI, raw_upstream
from tests.integration.test_streaming import (
    ROLE,
    TEXT,
    chunked_body,
    logs,  # noqa: F401  (the fixture)
    one_route,
    raw_stream,
    request_event,
)

pytestmark = pytest.mark.timeout(30)


def trickling(piece: Callable[[int], bytes], every: float, stop: asyncio.Event) -> Callable:
    """A stream's first events, then `piece(n)` every `every` seconds until `stop`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ROLE + TEXT)
        with contextlib.suppress(ConnectionError):
            for n in range(1000):
                if stop.is_set():
                    break
                await asyncio.sleep(every)
                await response.write(piece(n))
        return response

    return handle


async def timed_stream(url: str) -> tuple[bytes, float]:
    started = time.monotonic()
    body = chunked_body(await raw_stream(url))
    return body, time.monotonic() - started


async def test_an_event_trickled_a_byte_at_a_time_ends_at_the_idle_timeout(stack, logs):  # noqa: F811
    """Each byte comes well within `idle`, but no whole event does: before, any byte
    kept the stream open, so an upstream dribbling one event held its client (and a
    connection each side) for as long as it liked."""
    stop = asyncio.Event()

    def pieces(n: int) -> bytes:
        return b'data: {"choices":[' if n == 0 else b" "

    async with raw_upstream("/v1/chat/completions", trickling(pieces, 0.05, stop)) as upstream:
        try:
            url = await stack.router(one_route(upstream, timeouts={"idle": 0.5}))
            body, seconds = await timed_stream(url)
        finally:
            stop.set()
    assert body.startswith(ROLE + TEXT)
    assert body.endswith(b"\n\n") and b"idle timeout" in body.split(TEXT, 1)[1]
    assert b'data: {"choices":[' not in body.split(TEXT, 1)[1]  # the unfinished event is dropped
    assert seconds < 5
    event = request_event(logs)
    assert (event["status"], event["outcome"], event["stream"]) == (200, "failed", "timeout")


async def test_whole_events_within_idle_keep_a_stream_open(stack, logs):  # noqa: F811
    """The idle bound counts from the last whole event: a stream whose events keep
    coming is not cut, however long its whole events take to arrive piece by piece."""
    stop = asyncio.Event()
    # An event in two halves, 0.2 s apart, then the next: never 0.5 s without a whole one.
    halves = (b'data: {"choices":[{"index":0,', b'"delta":{"content":"Hi"}}]}\n\n')
    async with raw_upstream(
        "/v1/chat/completions", trickling(lambda n: halves[n % 2], 0.2, stop)
    ) as upstream:
        url = await stack.router(one_route(upstream, timeouts={"idle": 0.5}))
        task = asyncio.create_task(timed_stream(url))
        await asyncio.sleep(2)
        assert not task.done()  # still streaming after four idle periods
        stop.set()
        body, _ = await task
    assert body.count(b'"Hi"') >= 5
    assert b"timeout" not in body


async def test_a_stream_past_its_routes_stream_timeout_ends_with_an_error_event(stack, logs):  # noqa: F811
    """Whole events keep coming within `idle`, but `timeouts.stream` (here the route's
    own) bounds the whole stream."""
    stop = asyncio.Event()
    async with raw_upstream(
        "/v1/chat/completions", trickling(lambda n: TEXT, 0.1, stop)
    ) as upstream:
        try:
            config = routes_yaml(
                keys=[key("u", f"{upstream}/v1", api_key="sk-test-01")],
                models={"gpt-4o": model(route("u", "gpt-4o", timeouts={"stream": 1}))},
                timeouts={"idle": 5},
            )
            url = await stack.router(config)
            body, seconds = await timed_stream(url)
        finally:
            stop.set()
    assert body.startswith(ROLE + TEXT) and body.count(TEXT) >= 5
    assert b"stream timeout" in body.rsplit(TEXT, 1)[1]
    assert 1 <= seconds < 4
    event = request_event(logs)
    assert (event["status"], event["outcome"], event["stream"]) == (200, "failed", "timeout")


async def test_a_stream_ended_by_its_stream_timeout_counts_nothing_against_its_route(
    stack,
    logs,  # noqa: F811
):
    """The bound is the router's, not the route's failure: a generation longer than it
    opens no circuit (here one failure would open it), and the next request goes to the
    same route, not to the one after it."""
    stop = asyncio.Event()
    endless = trickling(lambda n: TEXT, 0.1, stop)
    async with (
        raw_upstream("/v1/chat/completions", endless) as first,
        raw_upstream("/v1/chat/completions", endless) as second,
    ):
        try:
            config = routes_yaml(
                keys=[key("u", f"{first}/v1", api_key="sk-test-01"),
                      key("v", f"{second}/v1", api_key="sk-test-02")],
                models={"gpt-4o": model(route("u", "gpt-4o", priority=1),
                                        route("v", "gpt-4o", priority=2))},
                timeouts={"stream": 0.5},
                failover={"breaker_failures": 1, "breaker_failure_rate": 0.1},
            )  # fmt: skip
            url = await stack.router(config)
            bodies = [(await timed_stream(url))[0] for _ in range(2)]
        finally:
            stop.set()
    assert all(b"stream timeout" in body for body in bodies)
    events = [e for e in logs.events() if e["event"] == "request"]
    assert [e["attempts"] for e in events] == [["u/gpt-4o:timeout"]] * 2


@pytest.mark.timeout(60)  # a translated request imports litellm once (~3 s)
async def test_a_translated_stream_past_the_stream_timeout_ends_with_an_error_event(stack):
    """The same bound on a stream litellm translates (an Anthropic client, an OpenAI
    route): the simulator sends a word every 0.2 s for 8 s."""
    slow = SimKey(name="a", api_key="sk-sim-key-a-000001", chunk_delay=0.2, reply="word " * 40)
    _sim, sim_url = await stack.sim(slow)
    config = routes_yaml(
        keys=[sim_key(slow, sim_url)],
        models={"gpt-4o": model(route("a", "gpt-4o"))},
        timeouts={"stream": 1.5},
    )
    url = await stack.router(config)
    payload = {"model": "gpt-4o", "max_tokens": 64, "messages": HI, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/messages", json=payload) as response,
    ):
        first = await response.content.readuntil(b"\n\n")  # litellm loaded by then
        started = time.monotonic()
        body = first + await response.read()
    assert b"event: content_block_delta" in body
    assert b"event: error" in body and b"stream timeout" in body
    assert b"event: message_stop" not in body
    assert time.monotonic() - started < 5
