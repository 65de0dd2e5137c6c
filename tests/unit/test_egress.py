"""The keys' own litellm clients (translate/egress.py) belong to the event loop that
made them: a router on a later loop never gets, or closes, a client of a closed one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.types import Key
from router.upstream.translate import egress, runtime

pytestmark = pytest.mark.timeout(60)

OPENAI = Key(name="a", provider="openai", api_base="http://127.0.0.1:9/v1", api_key="sk-a")


@pytest.fixture(scope="module", autouse=True)
def litellm_loaded() -> None:
    asyncio.run(runtime.load())  # the clients are litellm's handlers' types


def client_on_a_new_loop() -> Any:
    async def make() -> Any:
        return egress.client_arguments(OPENAI, OPENAI.api_base)["client"]

    return asyncio.run(make())  # asyncio.run closes its loop on the way out


def test_each_loop_gets_its_own_client_and_keeps_it() -> None:
    async def twice() -> tuple[Any, Any]:
        first = egress.client_arguments(OPENAI, OPENAI.api_base)["client"]
        second = egress.client_arguments(OPENAI, OPENAI.api_base)["client"]
        await egress.close()
        return first, second

    stale = client_on_a_new_loop()
    first, second = asyncio.run(twice())
    assert first is second
    assert first is not stale


def test_closing_on_one_loop_leaves_a_closed_loops_client_alone_and_forgets_it() -> None:
    stale = client_on_a_new_loop()
    closed: list[Any] = []
    stale.close = lambda: closed.append(stale)  # would schedule on its closed loop

    async def serve_and_shut_down() -> Any:
        fresh = egress.client_arguments(OPENAI, OPENAI.api_base)["client"]
        await egress.close()
        return fresh

    fresh = asyncio.run(serve_and_shut_down())
    assert closed == []
    assert fresh.is_closed()
    assert egress._clients == {}


@pytest.mark.parametrize(
    ("provider", "base"),
    [("perplexity", "https://api.perplexity.ai"), ("deepinfra", "https://api.deepinfra.com")],
)
def test_a_key_of_an_openai_compatible_provider_gets_a_client_on_that_providers_base(
    provider, base
):
    """litellm sends a client of ours to the client's own base URL, not the call's: a key
    without api_base must get the provider's, never the OpenAI SDK's default."""
    keyed = Key(name="p", provider=provider, api_base="", api_key="pplx-test")

    async def made() -> Any:
        try:
            return egress.client_arguments(keyed, None)["client"]
        finally:
            await egress.close()

    client = asyncio.run(made())
    assert str(client.base_url).startswith(base)
    assert client.api_key == "pplx-test"
