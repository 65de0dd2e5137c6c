"""The log a person reads: one JSON event per request, request ids, and no secrets."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import openai
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.sim import Fault, SimKey
from router.telemetry.logs import configure_logging, request_log, reset_logging
from tests.configs import key, model, preferring_a, route, routes_yaml, sim_keys, two_keys_models
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state, client, raw_upstream

CLIENT_KEY = "router-client-key-0123456789"


class StderrLike(io.TextIOWrapper):
    """A line-buffered UTF-8 text stream over bytes, as Python opens stderr: the request
    line goes to its binary layer, every other line through the text layer."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", line_buffering=True)

    def getvalue(self) -> str:
        self.flush()
        buffer = self.buffer
        assert isinstance(buffer, io.BytesIO)
        return buffer.getvalue().decode("utf-8")


class Captured:
    def __init__(self) -> None:
        self.stream = StderrLike()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def logs() -> Iterator[Captured]:
    """The real processors (redaction included) writing JSON lines to a buffer."""
    captured = Captured()
    secrets = [SIM_A.api_key, SIM_B.api_key, CLIENT_KEY]
    configure_logging(secrets=secrets, stream=captured.stream, cache_loggers=False)
    try:
        yield captured
    finally:
        reset_logging()


async def test_each_request_logs_one_event_with_route_attempts_and_timings(stack, logs):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.rate_limit(retry_after=30))
    completion = await client(url).chat.completions.create(model="gpt-4o", messages=HI)

    (event,) = [e for e in logs.events() if e["event"] == "request"]
    assert event["level"] == "info"
    assert event["model"] == "gpt-4o" and event["route"] == "b/gpt-4o"
    assert event["attempts"] == ["a/gpt-4o:rate_limited", "b/gpt-4o:ok"]
    assert event["status"] == 200 and event["outcome"] == "served_after_failover"
    assert event["latency_ms"] > 0 and event["ttft_ms"] is None
    assert event["tokens_in"] == completion.usage.prompt_tokens
    assert event["tokens_out"] == completion.usage.completion_tokens
    assert event["timestamp"].endswith("+00:00")
    assert [e["event"] for e in logs.events()].count("route_cooled_down") == 1


async def test_a_stream_logs_its_time_to_first_token(stack, logs):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    [chunk async for chunk in stream]
    await stack.close()  # the router finishes its bookkeeping before it stops
    (event,) = [e for e in logs.events() if e["event"] == "request"]
    assert event["ttft_ms"] > 0 and event["stream"] == "ok"


async def test_client_request_id_is_returned_and_on_every_line_of_its_request(stack, logs):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.server_error(500))
    raw = await client(url).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, extra_headers={"x-request-id": "trace-42"}
    )
    assert raw.headers["x-request-id"] == "trace-42"
    lines = [e for e in logs.events() if e.get("request_id") == "trace-42"]
    assert {e["event"] for e in lines} == {"failover", "request"}
    other = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    made = other.headers["x-request-id"]
    assert len(made) == 32 and made != "trace-42"
    assert [e["event"] for e in logs.events() if e.get("request_id") == made] == ["request"]


async def test_dead_key_warns_once_per_transition_not_per_request(stack, clock, logs):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock)
    sim.inject("a", Fault.auth())
    for _ in range(5):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    warnings = [e for e in logs.events() if e["level"] == "warning"]
    assert [(e["event"], e["key"], e["reason"]) for e in warnings] == [
        ("key_disabled", "a", "auth")
    ]


async def test_the_request_line_says_why_each_route_was_skipped_and_which_fallback_served(
    stack, clock, logs
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    config = routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B, SIM_C),
        models={
            **two_keys_models(priority_b=2, fallback=["gpt-4o-mini"]),
            "gpt-4o-mini": model(route("c", "gpt-4o-mini")),
        },
        failover={"max_wait": 0},
    )
    url = await stack.router(config, clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    for _ in range(2):  # a's 429 cools it down; the next request passes it over
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    sim.inject("b", Fault.auth())
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)  # c serves
    clock.advance(10)
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    sim.inject("c", Fault.rate_limit(retry_after=5))
    with pytest.raises(openai.RateLimitError):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)

    requests = [e for e in logs.events() if e["event"] == "request"]
    assert [(e["route"], e["outcome"], e["skipped"]) for e in requests] == [
        ("b/gpt-4o", "served_after_failover", None),
        ("b/gpt-4o", "served", ["a/gpt-4o: cooling down after a 429, back in 30.0s"]),
        (
            "c/gpt-4o-mini",
            "served_by_fallback",
            ["a/gpt-4o: cooling down after a 429, back in 30.0s"],
        ),
        (
            "c/gpt-4o-mini",
            "served_by_fallback",
            [
                "a/gpt-4o: cooling down after a 429, back in 20.0s",
                "b/gpt-4o: key disabled (auth), back in 3590.0s",
            ],
        ),
        # c's 429: nothing left; a and b are still out for what the line before said
        (None, "exhausted", requests[3]["skipped"]),
    ]
    assert requests[2]["attempts"] == ["b/gpt-4o:auth", "c/gpt-4o-mini:ok"]
    assert requests[2]["served_by"] == "gpt-4o-mini"
    assert requests[-1]["attempts"] == ["c/gpt-4o-mini:rate_limited"]  # tried: not skipped


async def test_keys_planted_in_headers_bodies_urls_and_errors_never_reach_a_line(stack, logs):
    planted = "sk-proj-" + "PLANTEDplantedPLANTED0123456789"  # built: no key-shaped literal
    # The provider answers a's key with an error that echoes it (classified as auth).
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SimKey(name="c", api_key=planted))
    sim.inject("a", Fault.bad_request(f"key {SIM_A.api_key} is invalid", code="invalid_api_key"))
    config = routes_yaml(  # preferring_a's, with key c holding the planted key
        keys=[*sim_keys(sim_url, SIM_A, SIM_B), key("c", sim_url, api_key=planted)],
        models={**two_keys_models(priority_b=2), "extra": model(route("c", planted))},
        server={"client_keys": [CLIENT_KEY]},
    )
    url = await stack.router(config)
    sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
    await sdk.chat.completions.create(  # a key in a header, the body and the request id
        model="gpt-4o",
        messages=[{"role": "user", "content": f"my key is {planted}"}],
        extra_headers={"x-request-id": planted, "x-api-key": planted},
    )
    await sdk.chat.completions.create(model="extra", messages=HI)  # a key as upstream model
    async with aiohttp.ClientSession() as session:  # a key in the URL, and a wrong client key
        await session.post(f"{url}/v1/chat/completions?key={planted}", data=b"{}")
        await session.post(
            f"{url}/v1/chat/completions", data=b"{}", headers={"Authorization": f"Bearer {planted}"}
        )
    text = logs.text()
    assert "key_disabled" in text and "[redacted]" in text  # the echo was logged, redacted
    for secret in (planted, SIM_A.api_key, SIM_B.api_key, CLIENT_KEY, "PLANTEDplanted"):
        assert secret not in text


# -- The pipeline itself ---------------------------------------------------------------


def test_lines_carry_level_names_a_millisecond_utc_timestamp_and_exceptions() -> None:
    captured = Captured()
    configure_logging(stream=captured.stream, cache_loggers=False)
    log = structlog.get_logger("test")
    try:
        log.warning("careful", n=1)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        log.info("unrepresentable", value=object())
        request_log()("abc123", {"model": "m", "status": 200})
    finally:
        reset_logging()
    careful, failed, odd, request = captured.events()
    assert (careful["event"], careful["level"], careful["n"]) == ("careful", "warning", 1)
    assert failed["level"] == "error" and "ValueError: boom" in failed["exception"]
    assert odd["value"].startswith("<object object")  # repr, not a crash
    assert request == {
        "event": "request",
        "request_id": "abc123",
        "level": "info",
        "model": "m",
        "status": 200,
        "timestamp": request["timestamp"],
    }
    for event in (careful, request):
        stamp = datetime.fromisoformat(event["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert abs(stamp - datetime.now(UTC)) < timedelta(seconds=5)
        assert len(event["timestamp"]) == len("2026-11-24T06:39:53.123+00:00")


class RawBytes(io.RawIOBase):
    """A raw layer (stderr's under PYTHONUNBUFFERED=1) that takes at most `most` bytes a
    write, as a pipe may."""

    def __init__(self, most: int = 1 << 20) -> None:
        self.data = bytearray()
        self._most = most

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        taken = bytes(data[: self._most])
        self.data += taken
        return len(taken)

    def getvalue(self) -> bytes:
        return bytes(self.data)


@pytest.mark.parametrize(
    ("encoding", "layer"),
    [("utf-8", "buffered"), ("utf-8", "raw"), ("latin-1", "buffered"), ("latin-1", "raw")],
)
def test_request_lines_keep_their_place_among_other_lines_in_the_streams_encoding(
    encoding: str, layer: str
) -> None:
    """On a UTF-8 stream the request line goes to its binary layer, on any other
    through its text layer: either way in order, and in the stream's encoding."""
    buffer: io.BytesIO | RawBytes = io.BytesIO() if layer == "buffered" else RawBytes()
    stream = io.TextIOWrapper(
        buffer, encoding=encoding, line_buffering=layer == "buffered", write_through=True
    )
    configure_logging(secrets=[SIM_A.api_key], stream=stream, cache_loggers=False)
    log = structlog.get_logger("test")
    try:
        log.warning("before")
        request_log()("abc123", {"model": "café", "route": f"a/{SIM_A.api_key}"})
        log.warning("after", model="café")
        request_log()("def456", {"model": "gpt-4o", "status": 200})
    finally:
        reset_logging()
    stream.flush()
    text = buffer.getvalue().decode(encoding)
    events = [json.loads(line) for line in text.splitlines()]
    assert [event["event"] for event in events] == ["before", "request", "after", "request"]
    assert events[1]["model"] == events[2]["model"] == "café"
    assert events[1]["route"] == "a/[redacted]"
    assert events[3]["request_id"] == "def456" and events[3]["status"] == 200


def test_a_raw_layer_that_takes_part_of_a_request_line_is_given_the_rest() -> None:
    raw = RawBytes(most=7)
    configure_logging(stream=io.TextIOWrapper(raw, encoding="utf-8"), cache_loggers=False)
    try:
        request_log()("abc123", {"model": "gpt-4o", "status": 200})
    finally:
        reset_logging()
    (line,) = raw.getvalue().decode().splitlines()
    assert json.loads(line)["request_id"] == "abc123"


def test_request_lines_follow_the_level_and_the_console_format() -> None:
    captured = Captured()
    configure_logging(level="warning", stream=captured.stream, cache_loggers=False)
    try:
        request_log()("abc123", {"model": "m"})
        assert captured.text() == ""  # info lines are below the level
        configure_logging(fmt="console", stream=captured.stream, cache_loggers=False)
        request_log()("abc123", {"model": "m", "key": SIM_A.api_key})
    finally:
        reset_logging()
    text = captured.text()
    assert "request" in text and "model" in text and "{" not in text  # not JSON
    assert SIM_A.api_key not in text  # shaped like a key: redacted in either format


async def test_a_stream_the_client_leaves_right_after_its_terminator_is_served_in_full(stack, logs):
    """SDK-based clients (Codex, aider, LangChain) close the connection as soon as they
    read `data: [DONE]`. When the provider's end of body comes a moment later, the
    handler is cancelled mid-relay; the stream was still delivered, so it is logged and
    counted as served, with its route, tokens and cost, and health records a success."""
    release = asyncio.Event()
    usage = b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}'
    events = (
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: {"choices":[],' + usage + b"}\n\n"
        b"data: [DONE]\n\n"
    )

    async def late_end(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(events)
        await release.wait()  # the body's end comes after the client has left
        await response.write_eof()
        return response

    registry = CollectorRegistry()
    async with raw_upstream("/v1/chat/completions", late_end) as upstream:
        price = {"input_per_mtok": 2, "output_per_mtok": 10}
        config = routes_yaml(
            keys=[key("u", f"{upstream}/v1", api_key="sk-test-01")],
            models={"gpt-4o": model(route("u", "gpt-4o", price=price))},
        )
        url = await stack.router(config, registry=registry)
        body = {"model": "gpt-4o", "messages": HI, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    received = b""
                    async with asyncio.timeout(5):
                        while b"data: [DONE]\n\n" not in received:
                            received += await response.content.readany()
                    response.close()  # hang up at once, as the SDKs do
                async with asyncio.timeout(5):
                    while not [e for e in logs.events() if e["event"] == "request"]:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
        finally:
            release.set()
        (event,) = [e for e in logs.events() if e["event"] == "request"]
        assert event["status"] == 200 and event["outcome"] == "served"
        assert event["route"] == "u/gpt-4o" and event["attempts"] == ["u/gpt-4o:ok"]
        assert event["stream"] == "ok"
        assert (event["tokens_in"], event["tokens_out"]) == (11, 7)
        assert event["cost_usd"] == pytest.approx((11 * 2 + 7 * 10) / 1e6)
        labels = {"model": "gpt-4o", "route": "u/gpt-4o", "key": "u", "provider": "openai"}
        sample = registry.get_sample_value
        assert sample("llm_router_requests_total", {"model": "gpt-4o", "outcome": "served"}) == 1
        assert sample("llm_router_requests_total", {"model": "gpt-4o", "outcome": "cancelled"}) == 0
        assert sample("llm_router_upstream_attempts_total", {**labels, "outcome": "ok"}) == 1
        assert sample("llm_router_spend_usd_total", labels) == pytest.approx(92 / 1e6)
        routes, _ = await admin_state(url)
        served = routes["u/gpt-4o"]  # health saw a success: a latency, nothing in flight
        assert served["latency_ms"] is not None and served["in_flight"] == 0
        assert served["last_error"] is None


async def test_a_stream_the_upstream_cuts_after_its_start_is_logged_as_failed(stack, logs):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    registry = CollectorRegistry()
    url = await stack.router(preferring_a(sim_url), registry=registry)
    sim.inject("a", Fault.stream_cut(after_chunks=2))
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    with pytest.raises(openai.APIError):
        [chunk async for chunk in stream]
    await stack.close()  # the router finishes its bookkeeping before it stops
    (event,) = [e for e in logs.events() if e["event"] == "request"]
    assert event["status"] == 200 and event["route"] == "a/gpt-4o"
    assert event["outcome"] == "failed" and event["stream"] == "server_error"
    failed = {"model": "gpt-4o", "outcome": "failed"}
    assert registry.get_sample_value("llm_router_requests_total", failed) == 1


async def test_requests_on_one_keep_alive_connection_log_each_its_own_id(stack, logs):
    """A connection's requests run one after another in one task: each line of the
    second carries the second's id, never the first's."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    ids = ("first-request", "second-request")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for request_id in ids:
            sim.inject("a", Fault.server_error(500))
            async with session.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": HI},
                headers={"x-request-id": request_id},
            ) as response:
                assert response.status == 200
                await response.read()
    for request_id in ids:
        lines = [e["event"] for e in logs.events() if e.get("request_id") == request_id]
        assert sorted(lines) == ["failover", "request"]
    assert {e.get("request_id") for e in logs.events() if e["event"] == "failover"} == set(ids)
