"""A key's own `headers:` reach the upstream on every request of that key: passthrough
(OpenAI and Anthropic wire formats) and through litellm; a ${VAR} value is a secret."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from router.sim import Fault, SimKey
from tests.configs import key, model, route, routes_yaml, sim_key
from tests.conftest import HI, SIM_A, SIM_B, client, raw_upstream

pytestmark = pytest.mark.timeout(60)  # the translated request imports litellm (~3 s)

ANT = SimKey(name="ant", api_key="sk-ant-sim-key-ant-000004")
ORG = "org-from-a-variable-8731"  # a secret: it comes from ${OPENAI_ORG}
REFERER = "https://app.example/chat"
HEADERS = {
    "HTTP-Referer": REFERER,
    "X-Title": "Router tests",
    "OpenAI-Organization": "${OPENAI_ORG}",
    "OpenAI-Project": "proj_tests",
}
SENT = {  # as the upstream reads them
    "http-referer": REFERER,
    "x-title": "Router tests",
    "openai-organization": ORG,
    "openai-project": "proj_tests",
}


def _config(sim_url: str, sim_root: str) -> str:
    return routes_yaml(
        keys=[
            sim_key(SIM_A, sim_url, headers=HEADERS),
            sim_key(SIM_B, sim_url),
            sim_key(ANT, sim_root, provider="anthropic", headers=HEADERS),
        ],
        models={
            "gpt": model(route("a", "gpt-4o")),
            "plain": model(route("b", "gpt-4o")),
            "claude": model(route("ant", "claude-haiku-4-5")),
        },
    )


async def _router(stack: Any) -> tuple[Any, str]:
    sim, sim_url = await stack.sim(SIM_A, SIM_B, ANT)
    url = await stack.router(_config(sim_url, sim.root), environ={"OPENAI_ORG": ORG})
    return sim, url


def _sent(headers: dict[str, str]) -> dict[str, str]:
    return {name: headers.get(name, "") for name in SENT}


async def test_a_keys_headers_go_on_its_passthrough_requests_and_no_other_keys(stack) -> None:
    sim, url = await _router(stack)
    # The client's own organisation never goes upstream; its Referer gives way to the key's.
    sdk = client(url, default_headers={"OpenAI-Organization": "org-client", "X-Title": "client"})
    await sdk.chat.completions.create(model="gpt", messages=HI)
    passthrough = sim.requests[-1]
    assert (passthrough.key_name, passthrough.path) == ("a", "/v1/chat/completions")
    assert _sent(passthrough.headers) == SENT
    await client(url).chat.completions.create(model="plain", messages=HI)
    assert sim.requests[-1].key_name == "b"
    assert _sent(sim.requests[-1].headers) == dict.fromkeys(SENT, "")

    claude = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0, timeout=20)
    await claude.messages.create(model="claude", max_tokens=16, messages=HI)  # type: ignore[arg-type]
    native = sim.requests[-1]
    assert (native.key_name, native.path) == ("ant", "/v1/messages")
    assert _sent(native.headers) == SENT
    assert native.headers["x-api-key"] == ANT.api_key  # the key's credential, as before


async def test_a_keys_headers_go_on_its_requests_through_litellm(stack) -> None:
    sim, url = await _router(stack)
    completion = await client(url).chat.completions.create(model="claude", messages=HI)
    assert completion.choices[0].message.content
    translated = sim.requests[-1]
    assert (translated.key_name, translated.path) == ("ant", "/v1/messages")
    assert _sent(translated.headers) == SENT


async def test_a_header_value_from_a_variable_is_redacted_when_the_upstream_echoes_it(
    stack,
) -> None:
    sim, url = await _router(stack)
    sim.inject("a", Fault.bad_request(f"organization {ORG} is not a member of this project"))
    with pytest.raises(openai.BadRequestError) as caught:
        await client(url).chat.completions.create(model="gpt", messages=HI)
    assert ORG not in caught.value.response.text
    assert "organization [redacted] is not a member" in caught.value.message


async def test_a_header_the_client_also_sent_goes_upstream_once_with_the_keys_value(
    stack,
) -> None:
    got: list[list[str]] = []

    async def upstream(request: web.Request) -> web.Response:
        got.append(request.headers.getall("HTTP-Referer", []))
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
        }
        return web.Response(text=json.dumps(answer), content_type="application/json")

    async with raw_upstream("/v1/chat/completions", upstream) as upstream_url:
        config = routes_yaml(
            keys=[key("a", f"{upstream_url}/v1", api_key=SIM_A.api_key, headers=HEADERS)],
            models={"gpt": model(route("a", "gpt-4o"))},
        )
        url = await stack.router(config, environ={"OPENAI_ORG": ORG})
        sdk = client(url, default_headers={"http-referer": "https://client.example"})
        await sdk.chat.completions.create(model="gpt", messages=HI)
    assert got == [[REFERER]]
