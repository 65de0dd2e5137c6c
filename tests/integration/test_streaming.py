"""Streaming through the router: failover until the first byte, never after it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import replace

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.failover.attempt import AttemptRunner
from router.failover.open_stream import OpenStream
from router.handlers.client_stream import ClientStream
from router.sim import Fault, SimKey
from router.telemetry.logs import configure_logging, reset_logging
from router.wire.stream_watch import StreamWatch
from tests.configs import key, model, preferring_a, route, routes_yaml, sim_key
from tests.conftest import HI, SIM_A, SIM_B, admin_state, client, raw_upstream, sync_client
from tests.integration.test_logs import Captured


async def stream_text(url: str, **kwargs) -> tuple[dict[str, str], str, list]:
    """(response headers, the streamed text, every chunk) through the async SDK."""
    async with client(url).chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=HI, stream=True, **kwargs
    ) as response:
        chunks = [chunk async for chunk in await response.parse()]
        headers = dict(response.headers)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return headers, text, chunks


async def wait_until(condition, seconds: float = 5.0) -> None:
    """Poll the simulator's counters: they are plain numbers, with no event to await."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_stream_is_relayed_event_by_event_with_routing_headers(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    headers, text, chunks = await stream_text(url)
    assert text == "Hello from a via gpt-4o."
    assert headers["x-router-route"] == "a/gpt-4o"
    assert headers["content-type"] == "text/event-stream"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


async def test_stream_usage_chunk_passes_through_when_asked(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    _, _, chunks = await stream_text(url, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


async def test_sync_sdk_streams_through_the_router(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))

    def run() -> str:
        stream = sync_client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await asyncio.to_thread(run) == "Hello from a via gpt-4o."


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.rate_limit(retry_after=10), id="429-before-the-stream"),
        pytest.param(Fault.server_error(503), id="503-before-the-stream"),
        pytest.param(Fault.stream_error(after_chunks=0), id="error-as-first-event"),
        pytest.param(Fault.stream_cut(after_chunks=0), id="cut-before-first-event"),
        pytest.param(Fault.stream_stall(after_chunks=0), id="silent-until-first-byte-timeout"),
    ],
)
async def test_stream_fails_over_before_its_first_byte(stack, fault):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, timeouts={"first_byte": 0.5}))
    sim.inject("a", fault)
    headers, text, _ = await stream_text(url)
    assert text == "Hello from b via gpt-4o."
    assert headers["x-router-route"] == "b/gpt-4o"
    assert headers["x-router-attempts"] == "2"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param(Fault.stream_cut(after_chunks=2), "upstream", id="connection-dropped"),
        pytest.param(Fault.stream_error(after_chunks=2), "", id="provider-error-event"),
        pytest.param(Fault.stream_stall(after_chunks=2), "idle timeout", id="stalled-past-idle"),
    ],
)
async def test_stream_dying_midway_ends_with_an_error_the_client_sees(stack, fault, message):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, timeouts={"idle": 0.5}))
    sim.inject("a", fault)
    received: list[str] = []
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) != ""  # the client had the start of the answer
    assert message in caught.value.message
    assert sim.stats["b"].requests == 0  # never failed over after the commit


async def test_stream_without_done_is_reported_not_silently_ended(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.stream_cut(after_chunks=2))
    async with aiohttp.ClientSession() as session:
        payload = {"model": "gpt-4o", "messages": HI, "stream": True}
        async with session.post(f"{url}/v1/chat/completions", json=payload) as response:
            body = await response.read()
    assert b"data: [DONE]" not in body
    assert body.rstrip().endswith(b"}}")
    assert b'"code": "upstream_stream_error"' in body


@pytest.mark.timeout(60)  # a translated request imports litellm once (~3 s)
async def test_a_translated_anthropic_stream_cut_after_content_has_unknown_tokens(stack, logs):
    """litellm's adapter writes zeros in message_start's usage and the real counts in
    message_delta. A stream cut between the two never said how many tokens it used:
    unknown, not zero (a zero would log, count and charge a free request)."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.stream_cut(after_chunks=2))
    payload = {"model": "gpt-4o", "max_tokens": 16, "messages": HI, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/messages", json=payload) as response,
    ):
        body = await response.read()
    assert b"event: message_start" in body and b"event: error" in body
    assert b"event: message_delta" not in body  # cut before its counts came
    event = request_event(logs)
    assert event["outcome"] == "failed" and event["route"] == "a/gpt-4o"
    assert (event["tokens_in"], event["tokens_out"], event["cost_usd"]) == (None, None, None)


async def test_client_leaving_a_stream_cancels_the_upstream_request(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.stream_stall(after_chunks=2))
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    async for _ in stream:
        break
    await stream.close()
    await wait_until(lambda: sim.stats["a"].cancelled == 1)


async def test_client_leaving_a_pending_request_cancels_the_upstream_request(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.hang())
    with pytest.raises(openai.APITimeoutError):
        await client(url, timeout=0.3).chat.completions.create(model="gpt-4o", messages=HI)
    await wait_until(lambda: sim.stats["a"].cancelled == 1)
    assert sim.stats["b"].requests == 0


async def test_the_terminator_is_relayed_at_once_even_when_the_body_ends_later(stack):
    """The relay sends the last events and the end of the response in one write only
    when the upstream body has already ended; a terminator whose body end is late (a
    provider holding the connection a moment) must not wait for it."""
    release = asyncio.Event()
    async with raw_upstream("/v1/chat/completions", done_then_held(release)) as upstream:
        url = await stack.router(one_route(upstream))
        body = {"model": "gpt-4o", "messages": HI, "stream": True}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{url}/v1/chat/completions", json=body) as response,
            ):
                received = b""
                async with asyncio.timeout(5):
                    while b"data: [DONE]\n\n" not in received:
                        received += await response.content.readany()
                assert not response.content.at_eof()  # [DONE] came before the body's end
                release.set()
                async with asyncio.timeout(5):
                    received += await response.content.read()
        finally:
            release.set()
    assert received == ROLE + TEXT + DONE


async def test_a_stream_the_client_abandons_mid_way_teaches_health_nothing(stack):
    """The client left; the stalled upstream proved nothing either way, so the route's
    failure streak stays as it was (it must not be wiped as if the stream succeeded)."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.server_error(500), times=2)
    for _ in range(2):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)  # b serves
    routes, _ = await admin_state(url)
    assert routes["a/gpt-4o"]["consecutive_failures"] == 2
    sim.inject("a", Fault.stream_stall(after_chunks=2))
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    async for _ in stream:
        break
    await stream.close()
    await wait_until(lambda: sim.stats["a"].cancelled == 1)
    async with asyncio.timeout(5):
        while (await admin_state(url))[0]["a/gpt-4o"]["in_flight"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    routes, _ = await admin_state(url)
    assert routes["a/gpt-4o"]["consecutive_failures"] == 2
    assert routes["a/gpt-4o"]["latency_ms"] is None


async def test_the_headroom_of_a_stream_whose_first_event_never_comes_is_kept(stack):
    sim, sim_url = await stack.sim(replace(SIM_A, rpm=100, tpm=100_000), SIM_B)
    url = await stack.router(preferring_a(sim_url, timeouts={"first_byte": 0.5}))
    sim.inject("a", Fault.stream_stall(after_chunks=0))
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    async for _ in stream:
        pass
    routes, _ = await admin_state(url)
    assert routes["a/gpt-4o"]["headroom"]["limit_requests"] == 100


# -- after the head: one response, ended by an event, never a second HTTP head ----------

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"
CHUNKED_END = b"0\r\n\r\n"


@pytest.fixture
def logs() -> Iterator[Captured]:
    captured = Captured()
    configure_logging(stream=captured.stream, cache_loggers=False)
    try:
        yield captured
    finally:
        reset_logging()


def request_event(logs: Captured) -> dict:
    (event,) = [e for e in logs.events() if e["event"] == "request"]
    return event


def sse_upstream(*events: bytes, hold: asyncio.Event | None = None) -> Callable:
    """Writes `events`; with `hold`, the first two, then the rest once `hold` is set."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for at, event in enumerate(events):
            if at == 2 and hold is not None:
                await hold.wait()
            await response.write(event)
        await response.write_eof()
        return response

    return handle


def one_route(upstream: str, **sections: object) -> str:
    return routes_yaml(
        keys=[key("u", f"{upstream}/v1", api_key="sk-test-01")],
        models={"gpt-4o": model(route("u", "gpt-4o"))},
        **sections,
    )


def done_then_held(release: asyncio.Event) -> Callable:
    """A whole stream, `[DONE]` included, whose body ends only once `release` is set (a
    provider holding its connection a moment, or for good)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ROLE + TEXT + DONE)
        await release.wait()
        await response.write_eof()
        return response

    return handle


async def raw_stream(url: str, seen_text: asyncio.Event | None = None) -> bytes:
    """Every byte the router sends for one streamed chat on a connection of its own,
    read until the router closes it (`Connection: close`); `seen_text` is set once the
    text event has arrived."""
    body = json.dumps({"model": "gpt-4o", "messages": HI, "stream": True}).encode()
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        received = b""
        async with asyncio.timeout(10):
            while seen_text is not None and b'"Hi"' not in received:
                received += await reader.read(65536)
            if seen_text is not None:
                seen_text.set()
            return received + await reader.read()
    finally:
        writer.close()


def chunked_body(raw: bytes) -> bytes:
    """The body of one chunked response, asserting it is well formed and alone."""
    assert raw.count(b"HTTP/1.1 ") == 1, raw[-400:]
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    body = b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            assert rest == b"\r\n", rest[:200]  # the end of the body, and nothing after it
            return body
        body, rest = body + rest[:length], rest[length:]
        assert rest.startswith(b"\r\n")
        rest = rest[2:]


async def test_an_error_event_too_deep_to_read_mid_stream_ends_the_stream_cleanly(stack, logs):
    """Real input that used to raise inside the relay (RecursionError reading the event),
    after which aiohttp wrote `HTTP/1.1 500` into the chunked body."""
    deep = b'data: {"error":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n\n"
    async with raw_upstream("/v1/chat/completions", sse_upstream(ROLE, TEXT, deep)) as upstream:
        url = await stack.router(one_route(upstream))
        body = chunked_body(await raw_stream(url))
    assert body.startswith(ROLE + TEXT)
    assert DONE not in body
    event = request_event(logs)
    assert event["status"] == 200 and event["outcome"] == "failed"
    assert event["stream"] == "server_error"


async def test_an_unexpected_error_after_the_head_ends_the_stream_with_an_error_event(
    stack, logs, monkeypatch
):
    """No input is known to make the relay raise any more, so its stream watch is made to
    (the only stand-in for our own code in these tests): whatever raises after the head,
    the client gets an error event in its dialect and a clean end, never a second head."""
    inspect = StreamWatch._inspect

    def failing_inspect(self: StreamWatch, complete: bytes, usage: bool) -> None:
        if b"boom" in complete:
            raise RuntimeError("a bug in the relay")
        inspect(self, complete, usage)

    monkeypatch.setattr(StreamWatch, "_inspect", failing_inspect)
    boom = b'data: {"choices":[{"index":0,"delta":{"content":"boom"}}]}\n\n'
    text_seen = asyncio.Event()
    upstream_events = sse_upstream(ROLE, TEXT, boom, DONE, hold=text_seen)
    async with raw_upstream("/v1/chat/completions", upstream_events) as upstream:
        url = await stack.router(one_route(upstream))
        body = chunked_body(await raw_stream(url, text_seen))
        assert body.startswith(ROLE + TEXT) and body.endswith(b"\n\n")
        (error,) = [e for e in body[len(ROLE + TEXT) :].split(b"\n\n") if e]
        message = json.loads(error.removeprefix(b"data: "))["error"]["message"]
        assert message.startswith("internal router error")
        event = request_event(logs)
        assert event["status"] == 500 and event["outcome"] == "failed"
        assert event["stream"] == "router_error"
        assert any(e["event"] == "unhandled_error_in_stream" for e in logs.events())
        # The route is not blamed for the router's own failure.
        routes, _ = await admin_state(url)
        assert routes["u/gpt-4o"]["consecutive_failures"] == 0


async def test_an_error_after_the_stream_ended_adds_nothing_to_it(stack, logs, monkeypatch):
    """Settling the attempt (health, metrics, cost) runs after the end went out; a
    failure there must not write anything more on the connection."""
    settle = AttemptRunner.settle_stream

    async def failing_settle(self: AttemptRunner, stream: OpenStream) -> None:
        await settle(self, stream)
        raise RuntimeError("a bug in settling")

    monkeypatch.setattr(AttemptRunner, "settle_stream", failing_settle)
    async with raw_upstream("/v1/chat/completions", sse_upstream(ROLE, TEXT, DONE)) as upstream:
        url = await stack.router(one_route(upstream))
        assert chunked_body(await raw_stream(url)) == ROLE + TEXT + DONE
        # On a kept-alive connection the next request is served on it as usual.
        first, second = await two_streams_on_one_connection(url)
        assert chunked_body(first) == chunked_body(second) == ROLE + TEXT + DONE
    assert [e["status"] for e in logs.events() if e["event"] == "request"] == [500] * 3


async def two_streams_on_one_connection(url: str) -> list[bytes]:
    body = json.dumps({"model": "gpt-4o", "messages": HI, "stream": True}).encode()
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(host, int(port))
    answers = []
    try:
        for _ in range(2):
            writer.write(head.encode() + body)
            received = b""
            async with asyncio.timeout(10):
                while not received.endswith(CHUNKED_END):
                    chunk = await reader.read(65536)
                    assert chunk, f"the router closed the connection after {received[-200:]!r}"
                    received += chunk
            answers.append(received)
    finally:
        writer.close()
    return answers


async def test_a_client_that_resets_mid_stream_is_logged_as_gone_not_served(stack, logs):
    """A reset (SO_LINGER 0) while the upstream is still streaming: the relay's next write
    fails with ConnectionResetError, or the handler is cancelled, whichever the event
    loop sees first (so it is tried ten times). Either way the end never reached the
    client: 499, cancelled, never 200 served."""

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ROLE)
        with contextlib.suppress(ConnectionError):
            for _ in range(100_000):  # as fast as it can, until the router hangs up on it
                await response.write(TEXT * 20)
        return response

    async with raw_upstream("/v1/chat/completions", endless) as upstream:
        url = await stack.router(one_route(upstream))
        for tried in range(1, 11):
            await read_then_reset(url)
            async with asyncio.timeout(10):
                while len(request_events(logs)) < tried:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    logged = {(e["status"], e["outcome"], e["stream"]) for e in request_events(logs)}
    assert logged == {(499, "cancelled", "client_gone")}


def request_events(logs: Captured) -> list[dict]:
    return [e for e in logs.events() if e["event"] == "request"]


async def read_then_reset(url: str) -> None:
    """Open a stream, read its first events, then reset the connection."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-4o", "messages": HI, "stream": True}).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    async with asyncio.timeout(10):
        while received.count(b'"Hi"') < 3:
            received += await reader.read(65536)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # closed at once: with linger 0 the kernel sends a reset


async def test_a_write_that_finds_the_client_gone_is_logged_as_gone_not_served(
    stack, logs, monkeypatch
):
    """The branch the test above cannot force: aiohttp raises ConnectionResetError from a
    write when the transport closed before its connection_lost ran (the order of two
    ready sockets in one loop turn decides). The router's response (aiohttp's write, on
    our subclass only) is made to do just that for the event after the text; the relay
    swallows the error, the handler returns normally, and the end never reached the
    client."""
    write = web.StreamResponse.write

    async def write_to_a_closed_transport(self: web.StreamResponse, data: bytes) -> None:
        if b"boom" in data:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        await write(self, data)

    monkeypatch.setattr(ClientStream, "write", write_to_a_closed_transport)
    boom = b'data: {"choices":[{"index":0,"delta":{"content":"boom"}}]}\n\n'
    text_seen, finished = asyncio.Event(), asyncio.Event()

    async def still_streaming(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ROLE + TEXT)
        await text_seen.wait()
        with contextlib.suppress(ConnectionError):
            await response.write(boom)
            await finished.wait()  # more would come; the router hangs up first
        return response

    async with raw_upstream("/v1/chat/completions", still_streaming) as upstream:
        try:
            url = await stack.router(one_route(upstream))
            with contextlib.suppress(AssertionError):  # the body is cut: no chunked end
                chunked_body(await raw_stream(url, text_seen))
        finally:
            finished.set()
    event = request_event(logs)
    assert (event["status"], event["outcome"], event["stream"]) == (499, "cancelled", "client_gone")


async def test_bytes_after_the_terminator_in_the_last_read_end_the_stream_once(stack, logs):
    """The terminator and a stray unfinished event arrive with the end of the body: they
    go out with the end of the response, once, and the stream is served."""
    stray = b'data: {"choices":'
    async with raw_upstream("/v1/chat/completions", sse_upstream(ROLE + TEXT + DONE + stray)) as up:
        url = await stack.router(one_route(up))
        raw = await raw_stream(url)
    assert chunked_body(raw) == ROLE + TEXT + DONE + stray
    event = request_event(logs)
    assert (event["status"], event["outcome"]) == (200, "served")


async def test_a_stream_whose_upstream_holds_on_after_its_terminator_ends_served(stack, logs):
    """`[DONE]`, then the upstream keeps the connection open with no end of its body:
    the client's response ends within a moment of the terminator (the openai SDK reads
    on to the end of the response), with no error event after `[DONE]`, and the request
    is served, not failed with an idle timeout."""
    release = asyncio.Event()  # the body's end never comes while the client waits
    async with raw_upstream("/v1/chat/completions", done_then_held(release)) as upstream:
        # idle longer than the test: the idle timeout cannot be what ends it
        url = await stack.router(one_route(upstream, timeouts={"idle": 30}))
        try:
            async with asyncio.timeout(10):
                raw = await raw_stream(url)
        finally:
            release.set()
    body = chunked_body(raw)
    assert body.endswith(DONE) and b'"error"' not in body
    event = request_event(logs)
    assert (event["status"], event["stream"]) == (200, "ok")


ANT = SimKey(name="ant", api_key="sk-ant-sim-key-000002")
ANT_PRICE = {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000}


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.stream_cut(after_chunks=3), id="provider-cut"),
        pytest.param(Fault.stream_error(after_chunks=3), id="provider-error-event"),
        pytest.param(Fault.stream_stall(after_chunks=3), id="client-left"),
    ],
)
async def test_an_anthropic_stream_cut_after_content_has_unknown_output(stack, logs, fault):
    """Anthropic's message_start says the input's count, and 1 (a placeholder) for the
    output, whose count comes in message_delta at the end. A stream cut before it has
    used its input and an unknown number of output tokens: the input is counted (and its
    cost charged, the least the request cost), the output and the cost are unknown, not
    1 token's worth. Nothing failed over either: the answer had begun."""
    registry = CollectorRegistry()
    sim, _ = await stack.sim(ANT)
    text = routes_yaml(
        keys=[sim_key(ANT, sim.root, provider="anthropic")],
        models={"m": model(route("ant", "claude-sonnet-4-6", price=ANT_PRICE))},
    )
    url = await stack.router(text, registry=registry)
    sim.inject("ant", fault)
    payload = {"model": "m", "max_tokens": 64, "messages": HI, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/messages", json=payload) as response,
    ):
        received = b""
        async with asyncio.timeout(10):
            while not response.content.at_eof() and b"event: content_block_delta" not in received:
                received += await response.content.readany()
            if fault.kind != "stream_stall":
                received += await response.content.read()
    assert b'"output_tokens":1' in received.replace(b" ", b"")  # the placeholder went by
    assert b"event: message_delta" not in received  # cut before the counts came
    async with asyncio.timeout(5):
        while not request_events(logs):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    event = request_event(logs)
    assert event["route"] == "ant/claude-sonnet-4-6"
    # The attempt ended as its stream did (the client's leaving is no fault of it).
    ended = "ok" if fault.kind == "stream_stall" else event["stream"]
    assert event["attempts"] == [f"ant/claude-sonnet-4-6:{ended}"]
    assert event["tokens_in"] > 0
    assert (event["tokens_out"], event["cost_usd"]) == (None, None)
    labels = {"model": "m", "route": "ant/claude-sonnet-4-6", "key": "ant",
              "provider": "anthropic"}  # fmt: skip
    tokens = "llm_router_tokens_total"
    assert registry.get_sample_value(tokens, {**labels, "direction": "input"}) == event["tokens_in"]
    assert not registry.get_sample_value(tokens, {**labels, "direction": "output"})
    # Its input is billed whatever came of it: charged, as the least the request cost.
    spent = registry.get_sample_value("llm_router_spend_usd_total", labels)
    assert spent == event["tokens_in"] * ANT_PRICE["input_per_mtok"] / 1e6
    failovers = [
        sample
        for metric in registry.collect()
        if metric.name == "llm_router_failovers"
        for sample in metric.samples
        if sample.name == "llm_router_failovers_total" and sample.value
    ]
    assert failovers == []
