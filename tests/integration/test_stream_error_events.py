"""The error events the router writes into a committed stream, read by the official
SDKs' own stream parsers, and checked against the SDKs' own event types strictly (as
clients that validate events, such as the Vercel AI SDK, do)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from anthropic.types import ErrorResponse
from openai.types.responses import ResponseErrorEvent, ResponseStreamEvent
from pydantic import TypeAdapter

from router.sim import Fault, SimKey
from router.wire.stream_watch import StreamWatch
from tests.configs import key, model, preferring_a, route, routes_yaml, sim_keys
from tests.conftest import HI, SIM_A, SIM_B, client, raw_upstream

ANT_A = SimKey(name="ant-a", api_key="sk-ant-sim-key-a-0000001")
ANT_B = SimKey(name="ant-b", api_key="sk-ant-sim-key-b-0000002")
RESPONSE_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)

# Faults after the commit whose end the router writes: a dropped connection and an
# upstream that goes silent past the idle timeout.
ROUTER_ENDED = [
    pytest.param(Fault.stream_cut(after_chunks=2), "upstream stream failed", id="cut"),
    pytest.param(Fault.stream_stall(after_chunks=2), "idle timeout", id="stall"),
]


def claude_config(root: str) -> str:
    return routes_yaml(
        keys=sim_keys(root, ANT_A, ANT_B, provider="anthropic"),
        models={
            "claude": model(
                route("ant-a", "claude-sonnet-4-6"), route("ant-b", "claude-sonnet-4-6", priority=2)
            )
        },
        timeouts={"idle": 0.5},
    )


async def responses_events(url: str) -> list[Any]:
    stream = await client(url).responses.create(model="gpt-4o", input="hi", stream=True)
    return [event async for event in stream]


def assert_valid_responses_stream(events: list[Any]) -> ResponseErrorEvent:
    """Every event validates as the SDK's own type; the last is an error numbered after
    the one before it. Returns that error."""
    for event in events:
        RESPONSE_EVENT.validate_python(event.to_dict())
    error = ResponseErrorEvent.model_validate(events[-1].to_dict())
    assert error.sequence_number == events[-2].sequence_number + 1
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return error


@pytest.mark.parametrize(("fault", "message"), ROUTER_ENDED)
async def test_a_responses_stream_error_event_carries_the_next_sequence_number(
    stack, fault, message
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, timeouts={"idle": 0.5}))
    sim.inject("a", fault)
    events = await responses_events(url)
    assert any(e.type == "response.output_text.delta" for e in events)
    error = assert_valid_responses_stream(events)
    assert message in error.message and error.code == "upstream_stream_error"
    assert sim.stats["b"].requests == 0


async def test_the_responses_stream_helper_reads_the_routers_error_event(stack):
    """openai-python's higher-level `responses.stream()` accumulates the response as it
    goes; the router's error event passes through its state machine too."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.stream_cut(after_chunks=2))
    async with client(url).responses.stream(model="gpt-4o", input="hi") as stream:
        events = [event async for event in stream]
    assert events[-1].type == "error"
    assert "upstream stream failed" in events[-1].message
    assert isinstance(events[-1].sequence_number, int)


@pytest.mark.parametrize(("fault", "message"), ROUTER_ENDED)
async def test_an_anthropic_stream_error_event_is_anthropics_error_shape(stack, fault, message):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root))
    sim.inject("ant-a", fault)
    received: list[str] = []
    sdk = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0, timeout=20)
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with sdk.messages.stream(model="claude", max_tokens=64, messages=HI) as stream:
            async for piece in stream.text_stream:
                received.append(piece)
    assert "".join(received)  # the start of the answer reached the client
    body = ErrorResponse.model_validate(caught.value.body)
    assert body.error.type == "api_error" and message in body.error.message
    assert sim.stats["ant-b"].requests == 0


@pytest.mark.parametrize(("fault", "message"), ROUTER_ENDED)
async def test_a_chat_stream_error_event_raises_the_sdks_api_error(stack, fault, message):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, timeouts={"idle": 0.5}))
    sim.inject("a", fault)
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    with pytest.raises(openai.APIError) as caught:
        async for _ in stream:
            pass
    assert message in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == (
        "upstream_stream_error"
    )


def responses_event(kind: str, number: int, **fields: Any) -> bytes:
    data = {"type": kind, "sequence_number": number, **fields}
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def text_delta(number: int, text: str) -> bytes:
    return responses_event(
        "response.output_text.delta",
        number,
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta=text,
        logprobs=[],
    )


async def test_the_routers_own_failure_mid_stream_is_a_valid_responses_event(stack, monkeypatch):
    """Whatever raises after the head (here the stream watch, made to fail: the only
    stand-in for our own code) ends a Responses stream with an event its SDK validates,
    numbered after the last event the client had."""
    inspect = StreamWatch._inspect

    def failing_inspect(self: StreamWatch, complete: bytes, usage: bool) -> None:
        if b"boom" in complete:
            raise RuntimeError("a bug in the relay")
        inspect(self, complete, usage)

    monkeypatch.setattr(StreamWatch, "_inspect", failing_inspect)
    created = {"id": "resp_1", "object": "response", "created_at": 0, "status": "in_progress",
               "model": "gpt-4o", "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
               "tools": []}  # fmt: skip
    seen = asyncio.Event()
    events = (
        responses_event("response.created", 0, response=created),
        text_delta(1, "Hi"),
        text_delta(2, "boom"),
    )

    async def upstream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(events[0] + events[1])
        await seen.wait()  # the client has the text: the next event comes on its own
        await response.write(events[2])
        await response.write_eof()
        return response

    async with raw_upstream("/v1/responses", upstream) as base:
        config = routes_yaml(
            keys=[key("u", f"{base}/v1", api_key="sk-test-01")],
            models={"gpt-4o": model(route("u", "gpt-4o"))},
        )
        url = await stack.router(config)
        stream = await client(url).responses.create(model="gpt-4o", input="hi", stream=True)
        received = []
        async for event in stream:
            received.append(event)
            if event.type == "response.output_text.delta":
                seen.set()
    assert [e.type for e in received] == ["response.created", "response.output_text.delta", "error"]
    error = assert_valid_responses_stream(received)
    assert error.sequence_number == 2
    assert error.message.startswith("internal router error")
