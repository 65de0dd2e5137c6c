"""`POST /v1/messages/count_tokens` through the router, with the official `anthropic` SDK:
passed through to Anthropic routes (key choice, failover), counted locally for models
only translated routes serve, and Anthropic's error shape under `/v1/messages`."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest

from router.sim import Fault, SimKey
from router.upstream.translate import runtime
from tests.configs import model, route, routes_yaml, sim_key, sim_keys, two_keys_config
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state

pytestmark = pytest.mark.timeout(60)  # a local count imports litellm once (~3 s)

ANT_A = SimKey(name="ant-a", api_key="sk-ant-sim-key-a-0000001")
ANT_B = SimKey(name="ant-b", api_key="sk-ant-sim-key-b-0000002")
SYSTEM = "You are a terse assistant."
LONG = [{"role": "user", "content": "count these words " * 40}]


def claude_config(root: str, **route_fields: Any) -> str:
    return routes_yaml(
        keys=sim_keys(root, ANT_A, ANT_B, provider="anthropic"),
        models={
            "claude": model(
                route("ant-a", "claude-sonnet-4-6", **route_fields),
                route("ant-b", "claude-sonnet-4-6", priority=2, **route_fields),
            )
        },
    )


def sdk(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0, timeout=20)


async def count(url: str, model_name: str = "claude", **kwargs: Any) -> tuple[Any, int]:
    """(response headers, input_tokens) through the SDK's own count_tokens."""
    kwargs.setdefault("messages", HI)
    raw = await sdk(url).messages.with_raw_response.count_tokens(model=model_name, **kwargs)
    return raw.headers, (await raw.parse()).input_tokens


async def test_count_tokens_passes_through_to_an_anthropic_route(stack):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root))
    headers, counted = await count(url, system=SYSTEM)
    message = await sdk(url).messages.create(
        model="claude", max_tokens=16, system=SYSTEM, messages=HI
    )
    assert counted == message.usage.input_tokens  # the provider's own count
    assert headers["x-router-route"] == "ant-a/claude-sonnet-4-6"
    sent = next(r for r in sim.requests if r.path == "/v1/messages/count_tokens")
    assert sent.headers["x-api-key"] == ANT_A.api_key
    assert "client" not in sent.headers.get("authorization", "")
    assert json.loads(sent.body) == {"model": "claude-sonnet-4-6", "messages": HI, "system": SYSTEM}
    assert sim.stats["ant-a"].by_format == {"anthropic_count_tokens": 1, "anthropic": 1}


async def test_count_tokens_fails_over_and_teaches_health_nothing(stack, clock):
    """Counting has limits of its own at Anthropic, apart from Messages': a count's 429
    moves that count to the next key and leaves the key in service for messages."""
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root), clock=clock)
    sim.inject("ant-a", Fault.rate_limit(retry_after=30))
    headers, counted = await count(url)
    assert headers["x-router-route"] == "ant-b/claude-sonnet-4-6"
    assert headers["x-router-attempts"] == "2"
    assert counted > 0
    routes, _keys = await admin_state(url)
    assert routes["ant-a/claude-sonnet-4-6"]["state"] == "available"
    raw = await sdk(url).messages.with_raw_response.create(
        model="claude", max_tokens=16, messages=HI
    )
    assert raw.headers["x-router-route"] == "ant-a/claude-sonnet-4-6"


async def test_a_count_no_key_can_take_upstream_is_estimated_here(stack):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root))
    sim.inject("ant-a", Fault.rate_limit(retry_after=30))
    sim.inject("ant-b", Fault.overloaded())
    headers, counted = await count(url, system=SYSTEM)
    assert headers["x-router-counted-by"] == "litellm"
    assert headers["x-router-attempts"] == "2" and "x-router-route" not in headers
    assert 10 < counted < 40
    assert sim.stats["ant-a"].requests == sim.stats["ant-b"].requests == 1


async def test_a_prompt_longer_than_every_window_can_still_be_counted(stack):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root, max_input_tokens=20))
    with pytest.raises(anthropic.BadRequestError):
        await sdk(url).messages.create(model="claude", max_tokens=16, messages=LONG)
    _headers, counted = await count(url, messages=LONG)
    assert counted > 20


async def test_a_model_only_translated_routes_serve_is_counted_locally(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url))
    headers, short = await count(url, "gpt-4o", system=SYSTEM)
    _headers, longer = await count(url, "gpt-4o", system=SYSTEM, messages=LONG)
    assert headers["x-router-counted-by"] == "litellm"
    assert headers["x-router-attempts"] == "0" and "x-router-route" not in headers
    assert 10 < short < 40 and longer > short + 100  # tiktoken: about a token a word
    assert sum(stats.requests for stats in sim.stats.values()) == 0  # nothing went upstream


async def test_a_local_count_reads_tools_and_tool_results(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url))
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    turns = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                         "input": {"city": "Paris"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "sunny"}]},
    ]  # fmt: skip
    _headers, without_tools = await count(url, "gpt-4o", messages=turns)
    headers, with_tools = await count(url, "gpt-4o", messages=turns, tools=[tool])
    assert headers["x-router-counted-by"] == "litellm"
    assert with_tools > without_tools > 0


async def test_a_mixed_model_counts_upstream_on_its_anthropic_route(stack):
    sim, sim_url = await stack.sim(SIM_A, ANT_A)
    config = routes_yaml(
        keys=[sim_key(SIM_A, sim_url), sim_key(ANT_A, sim.root, provider="anthropic")],
        models={
            "mixed": model(route("a", "gpt-4o"), route("ant-a", "claude-sonnet-4-6", priority=2))
        },
    )
    url = await stack.router(config)
    headers, counted = await count(url, "mixed")
    assert headers["x-router-route"] == "ant-a/claude-sonnet-4-6" and counted > 0
    assert sim.stats["a"].requests == 0


async def test_count_tokens_errors_are_anthropics_shape(stack):
    sim, _ = await stack.sim(ANT_A, ANT_B)
    url = await stack.router(claude_config(sim.root))
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await count(url, "nope")
    assert unknown.value.body["type"] == "error"
    assert unknown.value.body["error"]["type"] == "not_found_error"


ANTHROPIC_SDK = {"anthropic-version": "2023-06-01"}  # on every request of Anthropic's SDKs


@pytest.mark.parametrize(
    ("method", "path", "status", "kind", "headers"),
    [
        ("POST", "/v1/messages/batches", 404, "not_found_error", {}),
        ("GET", "/v1/messages/count_tokens", 405, "not_found_error", {}),
        ("GET", "/v1/messages", 405, "not_found_error", {}),
        ("POST", "/v1/messagesx", 404, None, {}),  # not under /v1/messages: OpenAI's shape
        # Elsewhere, the shape of the SDK that asked.
        ("POST", "/v1/messagesx", 404, "not_found_error", ANTHROPIC_SDK),
        ("POST", "/v1/models", 405, "not_found_error", ANTHROPIC_SDK),
        ("POST", "/v1/models", 405, None, {}),
        ("GET", "/v1/files", 404, "not_found_error", ANTHROPIC_SDK),
    ],
)
async def test_unknown_paths_answer_in_the_shape_of_the_sdk_that_asked(
    stack, method, path, status, kind, headers
):
    sim, _ = await stack.sim(ANT_A)
    url = await stack.router(claude_config(sim.root))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{url}{path}", json={}, headers=headers) as response,
    ):
        body = await response.json()
    assert response.status == status
    if kind is None:
        assert "type" not in body and body["error"]["message"]
    else:
        assert body["type"] == "error" and body["error"]["type"] == kind


async def test_the_sdks_batch_api_gets_an_anthropic_not_found(stack):
    sim, _ = await stack.sim(ANT_A)
    url = await stack.router(claude_config(sim.root))
    with pytest.raises(anthropic.NotFoundError) as missing:
        await sdk(url).messages.batches.retrieve("msgbatch_01")
    assert missing.value.body["error"]["type"] == "not_found_error"


async def test_without_litellm_a_local_count_is_the_byte_estimate(stack, monkeypatch):
    """litellm is optional for a router without translated routes; were a count to need
    it and find it missing, the answer is the documented estimate, not an error."""

    async def missing() -> None:
        raise ImportError("No module named 'litellm'")

    monkeypatch.setattr(runtime, "load", missing)
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url))
    headers, counted = await count(url, "gpt-4o", messages=LONG)
    body = json.dumps({"model": "gpt-4o", "messages": LONG}).encode()
    assert headers["x-router-counted-by"] == "bytes"
    assert abs(counted - len(body) // 4) <= 2  # the SDK's own JSON spacing may differ
