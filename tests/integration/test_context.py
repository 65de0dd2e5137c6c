"""Context windows: routes too small for a prompt are skipped, context_fallback takes it."""

from __future__ import annotations

import openai
import pytest

from router.sim import Fault
from tests.configs import model, route, routes_yaml, sim_keys
from tests.conftest import SIM_A, SIM_B, client


def config(sim_url: str, *, window: int, fallback: bool = True) -> str:
    """short: gpt-4o-mini on a, limited to `window` input tokens; with `fallback`, a prompt
    too long for it goes to long: gpt-4o on b."""
    short = model(route("a", "gpt-4o-mini", max_input_tokens=window))
    if fallback:
        short["context_fallback"] = ["long"]
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B),
        models={"short": short, "long": model(route("b", "gpt-4o"))},
    )


def words(count: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "hello " * count}]


async def route_of(url: str, messages: list[dict[str, str]]) -> str:
    raw = await client(url).chat.completions.with_raw_response.create(
        model="short", messages=messages
    )
    return raw.headers["x-router-route"]


async def test_a_prompt_far_over_a_window_goes_to_the_context_fallback_unsent(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(config(sim_url, window=50))
    assert await route_of(url, words(300)) == "b/gpt-4o"
    assert sim.stats["a"].requests == 0  # no tokens were spent finding out


async def test_a_route_too_small_under_one_model_still_serves_where_its_window_is_larger(stack):
    """A window belongs to the route's entry: a/gpt-4o holds 50 tokens under short and
    100,000 under long, so the fallback may send the prompt to the same key and model."""
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    short = model(route("a", "gpt-4o", max_input_tokens=50), context_fallback=["long"])
    url = await stack.router(
        routes_yaml(
            keys=sim_keys(sim_url, SIM_A, SIM_B),
            models={"short": short, "long": model(route("a", "gpt-4o", max_input_tokens=100_000))},
        )
    )
    assert await route_of(url, words(300)) == "a/gpt-4o"


async def test_a_prompt_well_inside_the_window_stays(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(config(sim_url, window=1000))
    assert await route_of(url, words(10)) == "a/gpt-4o-mini"


async def test_near_the_limit_the_prompt_is_counted_exactly(stack):
    # About 45 tokens of text in a body whose bytes suggest more: the estimate puts it
    # near a 60-token window, the exact count says it fits.
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(config(sim_url, window=60))
    assert await route_of(url, words(40)) == "a/gpt-4o-mini"
    # About 125 tokens: near a 100-token window by estimate, over it by count.
    url = await stack.router(config(sim_url, window=100))
    assert await route_of(url, words(120)) == "b/gpt-4o"


async def test_an_upstream_context_length_error_goes_to_the_context_fallback(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(config(sim_url, window=100_000))
    sim.inject("a", Fault.context_length())
    raw = await client(url).chat.completions.with_raw_response.create(
        model="short", messages=words(3)
    )
    assert raw.headers["x-router-route"] == "b/gpt-4o"
    assert raw.headers["x-router-attempts"] == "2"


async def test_without_a_context_fallback_a_too_long_prompt_is_a_clear_400(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(config(sim_url, window=50, fallback=False))
    with pytest.raises(openai.BadRequestError) as caught:
        await client(url).chat.completions.create(model="short", messages=words(300))
    assert caught.value.code == "context_length_exceeded"
    assert "context window" in caught.value.message
    assert sim.stats["a"].requests == 0


async def test_a_prompt_too_large_to_count_near_a_window_is_sent_for_the_provider_to_judge(
    stack,
):
    """Over COUNT_AT_MOST bytes, a prompt near its route's window is not counted (counting
    multi-MB text took a gigabyte of native memory per burst): it is sent, and what the
    provider answers decides. Here about 175k tokens against a 150k window: counted, it
    was skipped unsent."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(config(sim_url, window=150_000))
    messages = words(175_000)  # 1.05 MB of body: an estimate of 262k tokens, near 150k
    await client(url).chat.completions.with_raw_response.create(model="short", messages=messages)
    assert sim.stats["a"].requests == 1  # sent to the route, not skipped by a count
