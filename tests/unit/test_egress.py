"""The keys' own litellm clients (translate/egress.py) belong to the event loop that
made them: a router on a later loop never gets, or closes, a client of a closed one."""

from __future__ import annotations

import asyncio
import dataclasses
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


OTHER = Key(name="b", provider="openai", api_base="http://127.0.0.1:9/v1", api_key="sk-b")


def test_a_reload_closes_the_clients_it_no_longer_names_once_their_uses_are_given_back() -> None:
    async def run() -> None:
        used = egress.client_arguments(OPENAI, OPENAI.api_base)["client"]  # a stream's
        idle = egress.client_arguments(OTHER, OTHER.api_base)["client"]
        await egress.release(idle)  # its call returned
        rotated = dataclasses.replace(OPENAI, api_key="sk-a-rotated")
        await egress.retire([rotated])  # a's secret changed, b is gone
        assert idle.is_closed() and not used.is_closed()
        fresh = egress.client_arguments(rotated, rotated.api_base)["client"]
        assert fresh is not used and fresh.api_key == "sk-a-rotated"
        await egress.release(used)  # the stream ended
        assert used.is_closed() and egress.open_clients() == [fresh]
        await egress.retire([rotated])  # a reload that changes nothing keeps it
        assert not fresh.is_closed()
        await egress.close()
        assert fresh.is_closed()
        await egress.release(fresh)  # a call that ends after shutdown: nothing to do

    asyncio.run(run())


def test_shutdown_closes_a_retired_client_still_in_use() -> None:
    async def run() -> Any:
        used = egress.client_arguments(OPENAI, OPENAI.api_base)["client"]
        await egress.retire([])
        assert not used.is_closed()
        await egress.close()
        return used

    assert asyncio.run(run()).is_closed()


def test_a_key_whose_provider_changes_gets_a_client_of_its_new_providers_kind() -> None:
    async def run() -> tuple[Any, Any]:
        # Same name, secret and address; `proxy: none` gives an anthropic key a client.
        anthropic = dataclasses.replace(OPENAI, provider="anthropic", proxy_given=True)
        before = egress.client_arguments(OPENAI, OPENAI.api_base)["client"]
        await egress.retire([anthropic])
        after = egress.client_arguments(anthropic, anthropic.api_base)["client"]
        await egress.close()
        return before, after

    before, after = asyncio.run(run())
    assert type(before).__name__ == "AsyncOpenAI" and type(after).__name__ == "AsyncHTTPHandler"
