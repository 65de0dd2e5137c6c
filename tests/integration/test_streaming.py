"""Streaming through the router: failover until the first byte, never after it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import openai
import pytest
from aiohttp import web

from router.sim import Fault
from tests.configs import key, model, preferring_a, route, routes_yaml
from tests.conftest import HI, SIM_A, SIM_B, admin_state, client, raw_upstream, sync_client


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
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    text = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'

    async def late_end(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(role + text + b"data: [DONE]\n\n")
        await release.wait()  # the body ends only when the test says so
        await response.write_eof()
        return response

    async with raw_upstream("/v1/chat/completions", late_end) as upstream:
        url = await stack.router(
            routes_yaml(
                keys=[key("u", f"{upstream}/v1", api_key="sk-test-01")],
                models={"gpt-4o": model(route("u", "gpt-4o"))},
            )
        )
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
    assert received == role + text + b"data: [DONE]\n\n"


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
