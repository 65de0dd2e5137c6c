"""What real coding clients send and read besides the body: `anthropic-beta` and other
SDK headers, and the `x-router-route` header on streams, through the official SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from router.sim import Fault, SimKey
from tests.configs import model, preferring_a, route, routes_yaml, sim_keys, two_keys_config
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, client

pytestmark = pytest.mark.timeout(60)  # translated requests import litellm once (~3 s)

ANT_A = SimKey(name="ant-a", api_key="sk-ant-sim-key-a-0000001")
ANT_B = SimKey(name="ant-b", api_key="sk-ant-sim-key-b-0000002")
BETAS = ["advanced-tool-use-2025-11-20", "claude-code-20250219", "context-management-2025-06-27"]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
# Advanced tool use: a tool-search tool, and a deferred tool with usage examples.
BETA_TOOLS: list[Any] = [
    {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": WEATHER_SCHEMA,
        "defer_loading": True,
        "input_examples": [{"city": "Paris"}],
    },
]
CONTEXT_MANAGEMENT = {"edits": [{"type": "clear_tool_uses_20250919"}]}


def claude_config(root: str) -> str:
    return routes_yaml(
        keys=sim_keys(root, ANT_A, ANT_B, provider="anthropic"),
        models={
            "claude": model(
                route("ant-a", "claude-sonnet-4-6"), route("ant-b", "claude-sonnet-4-6", priority=2)
            )
        },
    )


def sdk(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0, timeout=20)


async def test_anthropic_beta_headers_pass_through_to_anthropic_routes(stack):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root))
    message = await sdk(url).beta.messages.create(
        model="claude", max_tokens=16, messages=HI, betas=BETAS, tools=BETA_TOOLS,
        context_management=CONTEXT_MANAGEMENT,  # type: ignore[arg-type]
    )  # fmt: skip
    counted = await sdk(url).beta.messages.count_tokens(model="claude", messages=HI, betas=BETAS)
    assert message.content[0].text.startswith("Hello from ant-a")  # type: ignore[union-attr]
    assert counted.input_tokens > 0
    sent, count_sent = sim.requests[-2], sim.requests[-1]
    assert (sent.path, count_sent.path) == ("/v1/messages", "/v1/messages/count_tokens")
    for request in (sent, count_sent):
        # (the SDK adds token-counting-2024-11-01 to a beta count of its own accord)
        assert request.headers["anthropic-beta"].startswith(",".join(BETAS))
        assert request.headers["anthropic-version"]
        assert request.headers["x-stainless-lang"] == "python"  # other SDK headers too
    body = json.loads(sent.body)  # byte for byte, beta fields included
    assert body["tools"] == BETA_TOOLS and body["context_management"] == CONTEXT_MANAGEMENT


async def test_betas_a_translated_route_cannot_honour_are_dropped_not_failed(stack):
    """Claude Code on an OpenAI model: its betas, deferred tools and tool search would
    make an OpenAI-format provider answer 400; the request is served without them."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url, affinity=False))
    message = await sdk(url).beta.messages.create(
        model="gpt-4o", max_tokens=16, messages=HI, betas=BETAS, tools=BETA_TOOLS,
        context_management=CONTEXT_MANAGEMENT,  # type: ignore[arg-type]
    )  # fmt: skip
    assert message.content[0].text == "Hello from a via gpt-4o."  # type: ignore[union-attr]
    sent = sim.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert "anthropic-beta" not in sent.headers
    body = json.loads(sent.body)
    assert "context_management" not in body
    (tool,) = body["tools"]  # the deferred tool, sent up front; no tool search
    assert tool["type"] == "function" and tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"] == WEATHER_SCHEMA


async def test_a_translated_request_with_only_a_tool_search_tool_sends_no_tools(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url, affinity=False))
    async with sdk(url).beta.messages.stream(
        model="gpt-4o", max_tokens=16, messages=HI, betas=BETAS, tools=BETA_TOOLS[:1],
        tool_choice={"type": "auto"},
    ) as stream:  # fmt: skip
        text = await stream.get_final_text()
    assert text == "Hello from a via gpt-4o."
    body = json.loads(sim.requests[-1].body)
    assert "tools" not in body and "tool_choice" not in body


# -- x-router-route on streams: the route is known at the commit, before any byte -------


async def test_a_chat_stream_names_its_route_after_a_failover(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.server_error(503))
    async with client(url).chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=HI, stream=True
    ) as response:
        assert response.headers["x-router-route"] == "b/gpt-4o"
        assert response.headers["x-router-attempts"] == "2"
        chunks = [chunk async for chunk in await response.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(
        "Hello from b"
    )


async def test_a_responses_stream_names_its_route(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.stream_error(after_chunks=0))
    async with client(url).responses.with_streaming_response.create(
        model="gpt-4o", input="hi", stream=True
    ) as response:
        assert response.headers["x-router-route"] == "b/gpt-4o"
        events = [event async for event in await response.parse()]
    assert events[-1].type == "response.completed"


async def test_an_anthropic_stream_names_its_route(stack):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root))
    sim.inject("ant-a", Fault.overloaded())
    async with sdk(url).messages.stream(model="claude", max_tokens=16, messages=HI) as stream:
        text = await stream.get_final_text()
        headers = stream.response.headers
    assert headers["x-router-route"] == "ant-b/claude-sonnet-4-6"
    assert headers["x-router-attempts"] == "2"
    assert text.startswith("Hello from ant-b")


async def test_a_translated_anthropic_stream_names_its_route(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url))
    async with sdk(url).messages.stream(model="gpt-4o", max_tokens=16, messages=HI) as stream:
        await stream.get_final_text()
        assert stream.response.headers["x-router-route"] in ("a/gpt-4o", "b/gpt-4o")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_translated_routes_error_reaches_each_client_in_its_own_shape(stack, stream):
    """A context too long, from an OpenAI route to an Anthropic client (Claude Code on
    an OpenAI key) and from an Anthropic route to an OpenAI client: each SDK reads its
    own error shape, in the words its clients look for."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, ANT_A)
    config = routes_yaml(
        keys=[*sim_keys(sim_url, SIM_A, SIM_B), *sim_keys(sim.root, ANT_A, provider="anthropic")],
        models={"gpt": model(route("a", "gpt-4o")),
                "claude": model(route("ant-a", "claude-sonnet-4-6"))},
    )  # fmt: skip
    url = await stack.router(config)
    sim.inject("a", Fault.context_length())
    with pytest.raises(anthropic.BadRequestError) as from_openai:
        if stream:
            async with sdk(url).messages.stream(model="gpt", max_tokens=16, messages=HI) as s:
                await s.get_final_text()
        else:
            await sdk(url).messages.create(model="gpt", max_tokens=16, messages=HI)
    body = from_openai.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long: ")
    sim.inject("ant-a", Fault.context_length())
    with pytest.raises(openai.BadRequestError) as from_anthropic:
        await client(url).chat.completions.create(model="claude", messages=HI, stream=stream)
    assert from_anthropic.value.code == "context_length_exceeded"
    assert from_anthropic.value.type == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_responses_follow_up_goes_to_the_key_its_stored_answer_is_on(stack, stream):
    """A Responses answer is stored on the account that gave it; a follow-up naming it
    (`previous_response_id`) on another key, of another organisation, gets a 404. Two
    keys of one tier: every turn of the chain goes where the first went (affinity
    hashed the id, which changes every turn: the chain hopped between keys)."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))
    sdk_client = client(url)
    previous: str | None = None
    served: list[str] = []
    for turn in range(8):
        extra: dict[str, Any] = {"previous_response_id": previous} if previous else {}
        if stream and turn == 0:
            async with sdk_client.responses.with_streaming_response.create(
                model="gpt-4o", input=f"turn {turn}", stream=True, **extra
            ) as response:
                served.append(response.headers["x-router-route"])
                events = [event async for event in await response.parse()]
            previous = events[-1].response.id  # type: ignore[union-attr]
        else:
            raw = await sdk_client.responses.with_raw_response.create(
                model="gpt-4o", input=f"turn {turn}", **extra
            )
            served.append(raw.headers["x-router-route"])
            previous = raw.parse().id
    assert len(set(served)) == 1, served
