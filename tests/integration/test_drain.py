"""SIGTERM drains: /readyz 503 at once, the listener open for server.drain_grace, requests
and streams in flight finished or, past server.drain_timeout, ended with an error the
client can read; a second signal exits at once. The router runs as a real process."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, raw_upstream
from tests.integration.router_process import RouterProcess, router_process
from tests.integration.test_stream_error_events import responses_event, text_delta

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
MORE = b'data: {"choices":[{"index":0,"delta":{"content":" there"}}]}\n\n'
DONE = b"data: [DONE]\n\n"


def held_upstream(release: asyncio.Event) -> Callable[..., Any]:
    """Streams ROLE and TEXT, then MORE and DONE once `release` is set; a request that
    does not stream waits for `release` before its answer."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            await release.wait()
            return web.json_response({"choices": [{"message": {"content": "late"}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ROLE + TEXT)
        await release.wait()
        await response.write(MORE + DONE)
        await response.write_eof()
        return response

    return handle


def held_after(first: bytes, held: asyncio.Event) -> Callable[..., Any]:
    """An upstream that streams `first`, then holds the stream until `held` is set."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(first)
        await held.wait()
        return response

    return handle


async def last_event_after_drain(
    config: Path, path: str, body: dict[str, Any], seen: bytes
) -> dict[str, Any]:
    """A stream to `path` that the router, sent SIGTERM once `seen` has arrived, cuts at
    its drain_timeout: the payload of its last event, an `event: error`, after which
    the body ends cleanly and the router exits 0."""
    async with router_process(config) as router, aiohttp.ClientSession() as session:
        async with session.post(f"{router.url}{path}", json=body) as response:
            assert response.status == 200
            received = b""
            while seen not in received:
                received += await response.content.readany()
            router.signal(signal.SIGTERM)
            received += await response.content.read()  # to a clean end of the body
        assert await router.exit_code() == 0
    last = received.split(b"\n\n")[-2]
    assert last.startswith(b"event: error\ndata: ")
    return json.loads(last.removeprefix(b"event: error\ndata: "))


def config_file(tmp_path: Path, upstream: str, **server: float) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(
        routes_yaml(
            keys=[key("u", f"{upstream}/v1", api_key="sk-test-upstream-01")],
            models={"gpt-4o": model(route("u", "gpt-4o"))},
            server=server,
        )
    )
    return path


async def open_stream(
    session: aiohttp.ClientSession, url: str, path: str = "/v1/chat/completions"
) -> aiohttp.ClientResponse:
    """A stream whose head and first content event have arrived."""
    body = {"model": "gpt-4o", "messages": HI, "stream": True}
    response = await session.post(f"{url}{path}", json=body)
    assert response.status == 200
    received = b""
    while TEXT not in received:
        received += await response.content.readany()
    return response


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as response:
        return response.status, await response.json()


def stopped(router: RouterProcess) -> dict[str, Any]:
    (event,) = [e for e in router.events if e["event"] == "stopped"]
    return event


async def finished_in_time(
    release: asyncio.Event, stream: aiohttp.ClientResponse, router: RouterProcess
) -> None:
    """`stream`, released, gets the rest of its events, and the router exits 0 having
    cut nothing."""
    release.set()
    rest = await stream.content.read()
    assert rest.endswith(MORE + DONE)
    assert await router.exit_code() == 0
    end = stopped(router)
    assert (end["cut"], end["abandoned"], end["forced"]) == (0, 0, False)


async def test_draining_says_503_on_readyz_keeps_accepting_and_lets_a_stream_finish(tmp_path):
    release = asyncio.Event()
    async with raw_upstream("/v1/chat/completions", held_upstream(release)) as upstream:
        config = config_file(tmp_path, upstream, drain_grace=4, drain_timeout=20)
        async with router_process(config) as router, aiohttp.ClientSession() as session:
            stream = await open_stream(session, router.url)
            assert (await get(session, f"{router.url}/readyz"))[0] == 200
            router.signal(signal.SIGTERM)
            draining = await router.wait_for("draining")
            assert draining["in_flight"] == 1
            # Out of the load balancer at once, while the listener still takes requests.
            assert await get(session, f"{router.url}/readyz") == (503, {"status": "draining"})
            status, models = await get(session, f"{router.url}/v1/models")
            assert status == 200 and models["data"][0]["id"] == "gpt-4o"
            await finished_in_time(release, stream, router)


async def test_a_stream_outliving_drain_timeout_ends_with_an_error_event(tmp_path):
    release = asyncio.Event()  # never set: the upstream holds both requests
    async with raw_upstream("/v1/chat/completions", held_upstream(release)) as upstream:
        config = config_file(tmp_path, upstream, drain_timeout=1)
        async with router_process(config) as router, aiohttp.ClientSession() as session:
            stream = await open_stream(session, router.url)
            waiting = asyncio.create_task(
                session.post(
                    f"{router.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HI}
                )
            )
            while await in_flight(router) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            router.signal(signal.SIGTERM)
            rest = await stream.content.read()  # to the end of the body: a clean end
            answer = await waiting
            assert answer.status == 503
            error = (await answer.json())["error"]
            assert await router.exit_code() == 0
        release.set()
    assert rest.startswith(b"data: ") and rest.endswith(b"\n\n") and DONE not in rest
    event = json.loads(rest.removeprefix(b"data: "))["error"]
    assert "shutting down" in event["message"] and "drain_timeout" in event["message"]
    assert error["code"] == "router_shutting_down" and error["type"] == "service_unavailable"
    assert stopped(router)["cut"] == 2 and stopped(router)["forced"] is False
    requests = [e for e in router.events if e["event"] == "request"]
    assert sorted(e["status"] for e in requests) == [503, 503]
    assert [e["stream"] for e in requests if e["stream"]] == ["shutdown"]


async def test_an_anthropic_stream_cut_at_drain_timeout_ends_with_anthropics_error_event(
    tmp_path,
):
    start = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":'
        b'"message","role":"assistant","content":[],"model":"claude","usage":'
        b'{"input_tokens":3,"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
    )
    delta = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    )
    held = asyncio.Event()  # never set
    async with raw_upstream("/v1/messages", held_after(start + delta, held)) as upstream:
        config = tmp_path / "routes.yaml"
        config.write_text(
            routes_yaml(
                keys=[key("u", upstream, api_key="sk-ant-test-01", provider="anthropic")],
                models={"claude": model(route("u", "claude"))},
                server={"drain_timeout": 1},
            )
        )
        body = {"model": "claude", "max_tokens": 10, "messages": HI, "stream": True}
        error = await last_event_after_drain(config, "/v1/messages", body, b"text_delta")
        held.set()
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "shutting down" in error["error"]["message"]


async def test_a_responses_stream_cut_at_drain_timeout_numbers_its_error_event_next(tmp_path):
    """Clients that validate Responses events (the AI SDK) reject one without the next
    sequence_number: the drain's error event has it, as an upstream's failure's does."""
    start = b"".join(
        responses_event(kind, number, response={"id": "resp_1", "status": "in_progress"})
        for number, kind in enumerate(("response.created", "response.in_progress"))
    )
    first = start + text_delta(2, "Hi") + text_delta(3, " there")
    held = asyncio.Event()  # never set
    async with raw_upstream("/v1/responses", held_after(first, held)) as upstream:
        config = config_file(tmp_path, upstream, drain_timeout=1)
        body = {"model": "gpt-4o", "input": "hi", "stream": True}
        error = await last_event_after_drain(config, "/v1/responses", body, b" there")
        held.set()
    assert "shutting down" in error["message"]
    assert error["sequence_number"] == 4  # one past the last event relayed


async def in_flight(router: RouterProcess) -> int:
    """How many requests the router is serving, from its own gauge."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{router.url}/metrics") as response,
    ):
        text = await response.text()
    gauge = 'llm_router_requests_in_flight{model="gpt-4o"} '
    line = next(x for x in text.splitlines() if x.startswith(gauge))
    return int(float(line.removeprefix(gauge)))


async def test_a_second_signal_exits_at_once(tmp_path):
    release = asyncio.Event()
    async with raw_upstream("/v1/chat/completions", held_upstream(release)) as upstream:
        # Drain would wait 10 minutes for the stream; the test allows 30 seconds in all.
        config = config_file(tmp_path, upstream, drain_timeout=600)
        async with router_process(config) as router, aiohttp.ClientSession() as session:
            stream = await open_stream(session, router.url)
            router.signal(signal.SIGTERM)
            await router.wait_for("draining")
            router.signal(signal.SIGINT)
            assert await router.exit_code() == 0
            stream.close()
        release.set()
    assert stopped(router)["forced"] is True and stopped(router)["abandoned"] == 1


async def test_idle_connections_close_when_the_listener_does_and_busy_ones_after_their_answer(
    tmp_path,
):
    """Past drain_grace a kept-alive connection with no request on it is closed at
    once, so that the client's next request opens a new one (to another replica)
    rather than wait, unread, for the drain's end; one with a stream in flight gets
    the rest of its stream, then closes."""
    release = asyncio.Event()
    async with raw_upstream("/v1/chat/completions", held_upstream(release)) as upstream:
        config = config_file(tmp_path, upstream, drain_grace=0.2, drain_timeout=20)
        async with router_process(config) as router, aiohttp.ClientSession() as session:
            stream = await open_stream(session, router.url)
            host, port = router.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
                length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0])
                await reader.readexactly(length)  # kept alive, idle from here on
                router.signal(signal.SIGTERM)
                async with asyncio.timeout(5):  # drain_grace, then at once
                    assert await reader.read() == b""  # closed by the router
                assert not stream.content.at_eof()  # the stream is still being served
            finally:
                writer.close()
            await finished_in_time(release, stream, router)
