"""Capability-aware routing: a request goes only to routes that can serve what it needs
(tools, images, a JSON output format), through the official SDKs and a real socket."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from router.config import parse_config
from router.errors import ConfigError
from router.sim import SimKey
from router.types import ALL_CAPABILITIES, Capability, Operation
from router.wire.needs import request_needs
from tests.configs import model, route, routes_yaml, sim_key, sim_keys
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, client

ANT_A = SimKey(name="ant-a", api_key="sk-ant-sim-key-a-0000001")
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAC"
    "hwGA60e6kgAAAABJRU5ErkJggg=="
)
IMAGE_CHAT: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": PIXEL}},
        ],
    }
]
TOOL_RESULT_IMAGE = {"type": "tool_result", "content": [{"type": "image", "source": {}}]}


def config(sim_url: str, models: dict[str, Any]) -> str:
    return routes_yaml(keys=sim_keys(sim_url, SIM_A, SIM_B, SIM_C), models=models)


async def test_a_tools_request_skips_a_route_without_tools(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    # a is preferred but says it can do nothing beyond plain chat; b (gpt-4o in
    # litellm's table: tools, vision, schemas) is the second choice.
    gpt_4o = model(route("a", "gpt-4o", capabilities=[]), route("b", "gpt-4o", priority=2))
    url = await stack.router(config(sim_url, {"gpt-4o": gpt_4o}))
    sdk = client(url)
    raw = await sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, tools=TOOLS
    )
    assert raw.headers["x-router-route"] == "b/gpt-4o"
    assert raw.headers["x-router-attempts"] == "1"  # a was never tried
    assert sim.stats["a"].requests == 0 and sim.stats["b"].served == 1
    plain = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    assert plain.headers["x-router-route"] == "a/gpt-4o"  # a still serves what it can
    stream = await sdk.chat.completions.create(
        model="gpt-4o", messages=HI, tools=TOOLS, stream=True
    )
    assert [chunk async for chunk in stream]
    assert sim.stats["a"].requests == 1 and sim.stats["b"].served == 2


async def test_a_fallback_chain_skips_models_that_cannot_serve_images(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    models = {
        # gpt-4 in litellm's table: tools, no vision. Its fallback has vision.
        "gpt-4": model(route("a", "gpt-4"), fallback=["gpt-4o-mini"]),
        "gpt-4o-mini": model(route("c", "gpt-4o-mini")),
    }
    url = await stack.router(config(sim_url, models))
    raw = await client(url).chat.completions.with_raw_response.create(
        model="gpt-4", messages=IMAGE_CHAT
    )
    assert raw.headers["x-router-route"] == "c/gpt-4o-mini"
    assert raw.headers["x-router-attempts"] == "1"
    assert sim.stats["a"].requests == 0
    tools = await client(url).chat.completions.with_raw_response.create(
        model="gpt-4", messages=HI, tools=TOOLS
    )
    assert tools.headers["x-router-route"] == "a/gpt-4"


async def test_an_image_request_no_route_can_serve_is_a_400_that_names_it(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    models = {
        "gpt-4o": model(
            route("a", "gpt-4o", capabilities=["json_schema"]), fallback=["gpt-4o-mini"]
        ),
        "gpt-4o-mini": model(route("c", "gpt-4o-mini"), capabilities=["tools", "json_object"]),
    }
    url = await stack.router(config(sim_url, models))
    with pytest.raises(openai.BadRequestError) as raised:
        await client(url).chat.completions.create(model="gpt-4o", messages=IMAGE_CHAT)
    assert raised.value.status_code == 400
    body: Any = raised.value.body
    assert body["message"] == "no route of gpt-4o -> gpt-4o-mini supports images in the input"
    assert body["code"] == "unsupported_capability"
    with pytest.raises(openai.BadRequestError, match="supports images in the input"):
        await client(url).chat.completions.create(model="gpt-4o", messages=IMAGE_CHAT, stream=True)
    # Each capability on its own is somewhere, but no route has both.
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as both:
        await client(url).chat.completions.create(
            model="gpt-4o",
            messages=HI,
            tools=TOOLS,
            response_format=schema,  # type: ignore[arg-type]
        )
    assert "supports tools and structured output (json_schema) together" in str(both.value)
    assert all(sim.stats[k].requests == 0 for k in ("a", "b", "c"))


async def test_the_400_is_in_anthropics_shape_for_messages(stack):
    sim, _ = await stack.sim(ANT_A)
    text = routes_yaml(
        keys=[sim_key(ANT_A, sim.root, provider="anthropic")],
        models={"claude": model(route("ant-a", "claude-sonnet-4-6", capabilities=["tools"]))},
    )
    url = await stack.router(text)
    sdk = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0, timeout=20)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PIXEL.split(",")[1]}}  # fmt: skip
    messages: Any = [{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]
    with pytest.raises(anthropic.BadRequestError) as raised:
        await sdk.messages.create(model="claude", max_tokens=16, messages=messages)
    body: Any = raised.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "no route of claude supports images in the input"
    tools: Any = [{"name": "f", "input_schema": {"type": "object"}}]
    served = await sdk.messages.create(model="claude", max_tokens=16, messages=HI, tools=tools)
    assert served.content
    assert sim.stats["ant-a"].requests == 1
    await sdk.close()


async def test_a_model_nobody_describes_serves_everything(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    models = {"local": model(route("a", "some-local-model"))}
    url = await stack.router(config(sim_url, models))
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    raw = await client(url).chat.completions.with_raw_response.create(
        model="local",
        messages=IMAGE_CHAT,
        tools=TOOLS,
        response_format=schema,  # type: ignore[arg-type]
    )
    assert raw.headers["x-router-route"] == "a/some-local-model"
    response = await client(url).responses.create(
        model="local", input="hi", text={"format": {"type": "json_object"}}
    )
    assert response.output
    assert sim.stats["a"].served == 2


async def test_structured_output_on_responses_skips_a_route_without_it(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    gpt_4o = model(
        route("a", "gpt-4o", capabilities=["tools", "images"]), route("b", "gpt-4o", priority=2)
    )
    url = await stack.router(config(sim_url, {"gpt-4o": gpt_4o}))
    schema = {"type": "json_schema", "name": "x", "schema": {"type": "object"}}
    raw = await client(url).responses.with_raw_response.create(
        model="gpt-4o",
        input="hi",
        text={"format": schema},  # type: ignore[typeddict-item]
    )
    assert raw.headers["x-router-route"] == "b/gpt-4o"
    assert sim.stats["a"].requests == 0


def test_capabilities_resolve_at_load_routes_yaml_over_litellms_table():
    text = """
keys: {k: {provider: openai, api_key: sk-test-aaaaaaaaaaaa0000}}
models:
  m:
    capabilities: [tools]
    routes:
      - {key: k, model: gpt-4o}
      - {key: k, model: gpt-4, capabilities: [images, json_object]}
  n:
    routes:
      - {key: k, model: gpt-4o}
      - {key: k, model: gpt-4}
      - {key: k, model: some-local-model}
  everything:
    routes: [{key: k, model: gpt-4o}, {key: k, model: some-local-model}]
    context_fallback: [m]
  plain: {routes: [{key: k, model: gpt-4o}, {key: k, model: some-local-model}]}
"""
    loaded = parse_config(text, source="routes.yaml", environ={})
    assert [r.capabilities for r in loaded.models["m"].routes] == [
        Capability.TOOLS,
        Capability.IMAGES | Capability.JSON_OBJECT,
    ]
    assert [r.capabilities for r in loaded.models["n"].routes] == [
        ALL_CAPABILITIES,
        Capability.TOOLS | Capability.JSON_OBJECT,  # gpt-4: no vision, no schemas
        ALL_CAPABILITIES,  # not in the table: assumed capable
    ]
    # Only what some reachable route lacks is looked for in a request; a model whose
    # routes can all do everything costs its requests no look at all.
    checked = {name: spec.checked_needs[Operation.CHAT] for name, spec in loaded.models.items()}
    assert checked["n"] == Capability.IMAGES | Capability.JSON_SCHEMA
    assert checked["everything"] == ALL_CAPABILITIES  # m, its context fallback, has less
    assert checked["plain"] == 0


def test_an_unknown_capability_is_a_config_error_with_a_hint():
    text = """
keys: {k: {provider: openai, api_key: sk-test-aaaaaaaaaaaa0000}}
models: {m: {routes: [{key: k, model: gpt-4o, capabilities: [tool]}]}}
"""
    with pytest.raises(ConfigError, match=r"unknown capability 'tool'.*tools"):
        parse_config(text, source="routes.yaml", environ={})


@pytest.mark.parametrize(
    ("operation", "payload", "needs"),
    [
        pytest.param(Operation.CHAT, {"messages": HI}, 0, id="plain"),
        pytest.param(Operation.CHAT, {"messages": HI, "tools": []}, 0, id="empty-tools"),
        pytest.param(Operation.CHAT, {"functions": [{"name": "f"}]}, Capability.TOOLS, id="fns"),
        pytest.param(Operation.CHAT, {"messages": IMAGE_CHAT}, Capability.IMAGES, id="image"),
        pytest.param(
            Operation.CHAT,
            {"response_format": {"type": "json_object"}},
            Capability.JSON_OBJECT,
            id="json-mode",
        ),
        pytest.param(Operation.CHAT, {"response_format": {"type": ["x"]}}, 0, id="odd-type"),
        pytest.param(
            Operation.RESPONSES,
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": PIXEL}]}]},
            Capability.IMAGES,
            id="responses-image",
        ),
        pytest.param(
            Operation.MESSAGES,
            {"messages": [{"role": "user", "content": [TOOL_RESULT_IMAGE]}]},
            Capability.IMAGES,
            id="image-in-tool-result",
        ),
        pytest.param(
            Operation.MESSAGES,
            {"output_format": {"type": "json_schema", "schema": {}}, "tools": [{"name": "f"}]},
            Capability.JSON_SCHEMA | Capability.TOOLS,
            id="anthropic-structured",
        ),
        pytest.param(Operation.EMBEDDINGS, {"input": "image", "tools": [1]}, 0, id="embeddings"),
    ],
)
def test_a_requests_needs_come_from_its_top_level_keys_and_content_parts(operation, payload, needs):
    assert request_needs(operation, payload, ALL_CAPABILITIES) == needs
    assert request_needs(operation, payload, ALL_CAPABILITIES & ~needs) == 0
