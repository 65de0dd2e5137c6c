"""`GET /v1/models` and `GET /v1/models/{id}` through the official SDKs: each gets the
configured model names in its own shape, pages included, and its own errors (404, 401,
500)."""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import pytest

from router.handlers import models_list
from tests.configs import model, route, routes_yaml, sim_keys
from tests.conftest import SIM_A

pytestmark = pytest.mark.timeout(30)

NAMES = ["gpt-4o", "cheap", "org/tuned-model", "claude"]


async def router(stack) -> str:
    _, sim_url = await stack.sim(SIM_A)
    text = routes_yaml(
        keys=sim_keys(sim_url, SIM_A),
        models={name: model(route("a", "gpt-4o-mini")) for name in NAMES},
        server={"client_keys": ["router-client-key-0001"]},
    )
    return await stack.router(text)


def claude_sdk(url: str, key: str = "router-client-key-0001") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=10)


def openai_sdk(url: str, key: str = "router-client-key-0001") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)


async def test_openai_sdk_lists_and_retrieves_models(stack):
    url = await router(stack)
    sdk = openai_sdk(url)
    listed = await sdk.models.list()
    assert [m.id for m in listed.data] == NAMES
    assert {(m.object, m.owned_by) for m in listed.data} == {("model", "llm-router")}
    tuned = await sdk.models.retrieve("org/tuned-model")  # a name with a slash
    assert (tuned.id, tuned.object) == ("org/tuned-model", "model")
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.models.retrieve("gpt-5-nope")
    assert caught.value.code == "model_not_found"
    assert "gpt-5-nope" in caught.value.message


async def test_anthropic_sdk_lists_page_by_page_and_retrieves_models(stack):
    url = await router(stack)
    sdk = claude_sdk(url)
    first = await sdk.models.list(limit=3)
    assert [m.id for m in first.data] == NAMES[:3]
    assert first.has_more and (first.first_id, first.last_id) == ("gpt-4o", "org/tuned-model")
    assert {m.type for m in first.data} == {"model"}
    assert first.data[0].display_name == "gpt-4o"
    # The SDK's own pager follows last_id while has_more says so.
    assert [m.id async for m in await sdk.models.list(limit=1)] == NAMES
    before = await sdk.models.list(before_id="claude", limit=2)
    assert [m.id for m in before.data] == ["cheap", "org/tuned-model"] and before.has_more
    after_unknown = await sdk.models.list(after_id="not-here")
    assert (after_unknown.data, after_unknown.has_more, after_unknown.last_id) == ([], False, None)

    claude = await sdk.models.retrieve("claude")
    assert (claude.id, claude.type, claude.display_name) == ("claude", "model", "claude")
    with pytest.raises(anthropic.NotFoundError) as caught:
        await sdk.models.retrieve("claude-nope")
    assert caught.value.body["error"]["type"] == "not_found_error"  # Anthropic's shape


async def test_a_page_size_out_of_range_is_a_400_in_anthropics_shape(stack):
    url = await router(stack)
    headers = {"x-api-key": "router-client-key-0001", "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{url}/v1/models?limit=0") as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "limit" in body["error"]["message"]


async def test_models_need_a_client_key_when_one_is_set(stack):
    url = await router(stack)
    with pytest.raises(anthropic.AuthenticationError):
        await claude_sdk(url, "wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        await openai_sdk(url, "wrong").models.retrieve("gpt-4o")


async def test_a_wrong_key_is_a_401_in_the_shape_of_the_sdk_that_asked(stack):
    url = await router(stack)
    for ask in (lambda sdk: sdk.models.list(), lambda sdk: sdk.models.retrieve("claude")):
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await ask(claude_sdk(url, "wrong"))
        body = refused.value.body
        assert isinstance(body, dict) and body.keys() == {"type", "error"}
        assert (body["type"], body["error"]["type"]) == ("error", "authentication_error")
        assert "router key" in body["error"]["message"]
    for ask in (lambda sdk: sdk.models.list(), lambda sdk: sdk.models.retrieve("gpt-4o")):
        with pytest.raises(openai.AuthenticationError) as caught:
            await ask(openai_sdk(url, "wrong"))
        assert (caught.value.type, caught.value.code) == ("authentication_error", "invalid_api_key")
        assert "router key" in caught.value.message


async def test_the_routers_own_fault_is_a_500_in_the_shape_of_the_sdk_that_asked(
    stack, monkeypatch
):
    """A bug of the router's (the shaping of a model entry, made to fail) points to the
    log in the asker's error shape."""

    def failing(name: str) -> dict[str, object]:
        raise RuntimeError("a bug in the router")

    monkeypatch.setattr(models_list, "_anthropic", failing)
    monkeypatch.setattr(models_list, "_openai", failing)
    url = await router(stack)
    with pytest.raises(anthropic.InternalServerError) as failed:
        await claude_sdk(url).models.list()
    assert failed.value.body["type"] == "error"
    assert failed.value.body["error"]["type"] == "api_error"
    assert failed.value.body["error"]["message"].startswith("internal router error")
    with pytest.raises(openai.InternalServerError) as caught:
        await openai_sdk(url).models.retrieve("gpt-4o")
    assert (caught.value.type, caught.value.code) == ("server_error", "internal_error")
    assert caught.value.body["message"].startswith("internal router error")
