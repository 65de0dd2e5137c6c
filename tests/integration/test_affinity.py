"""Conversation affinity through the router: turns of a conversation reach the key that
holds its prompt cache, measured with the simulator's per-key prompt cache."""

from __future__ import annotations

from typing import Any

import anthropic

from router.sim import SimKey
from tests.configs import model, route, routes_yaml, sim_keys
from tests.conftest import SIM_A, SIM_B, SIM_C, client

SIM_D = SimKey(name="d", api_key="sk-sim-key-d-000004")
KEYS = (SIM_A, SIM_B, SIM_C, SIM_D)
CONVERSATIONS = 20
TURNS = 10


# A pool larger than router.rules.choice.SMALL: chosen by the rendezvous tree, not plan().
POOL = tuple(SimKey(name=f"p{n}", api_key=f"sk-sim-pool-key-{n:06d}") for n in range(40))


def config(sim_url: str, keys: tuple[SimKey, ...] = KEYS, **fields: Any) -> str:
    routes = [route(k.name, "gpt-4o") for k in keys]  # one tier, equal weights
    return routes_yaml(keys=sim_keys(sim_url, *keys), models={"gpt-4o": model(*routes, **fields)})


async def cache_hits(router_url: str) -> tuple[float, float]:
    """For CONVERSATIONS conversations of TURNS turns (half name themselves with
    prompt_cache_key, half are known only by how they start): the cached input tokens
    over the eligible ones (each turn's previous prompt, which the key that served it
    holds), and the share of turns after the first whose previous prompt was all cached.
    A turn sent to another key still hits what that key cached of an older turn, so the
    first figure counts partial hits; the second only whole ones."""
    sdk = client(router_url)
    cached = eligible = whole = 0
    for n in range(CONVERSATIONS):
        named = {"extra_body": {"prompt_cache_key": f"session-{n}"}} if n % 2 else {}
        messages: list[dict[str, str]] = [
            {"role": "system", "content": f"You are assistant number {n}. " * 20},
        ]
        previous = 0
        for turn in range(TURNS):
            messages.append({"role": "user", "content": f"Question {turn} of chat {n}? " * 10})
            answer = await sdk.chat.completions.create(model="gpt-4o", messages=messages, **named)
            usage = answer.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            hit = usage.prompt_tokens_details.cached_tokens or 0
            cached += hit
            eligible += previous
            whole += bool(previous) and hit >= previous
            previous = usage.prompt_tokens
            messages.append({"role": "assistant", "content": answer.choices[0].message.content})
    return cached / eligible, whole / (CONVERSATIONS * (TURNS - 1))


async def test_with_affinity_a_conversation_keeps_its_prompt_cache(stack):
    sim, sim_url = await stack.sim(*KEYS)
    tokens, turns = await cache_hits(await stack.router(config(sim_url)))
    print(f"with affinity: {tokens:.3f} of eligible tokens, {turns:.3f} of turns")
    assert tokens >= 0.9
    assert turns >= 0.9
    # Every key took its share of the conversations.
    assert all(sim.stats[k.name].served > 0 for k in KEYS)


async def test_in_a_large_pool_a_conversation_keeps_its_prompt_cache(stack):
    sim, sim_url = await stack.sim(*POOL)
    tokens, turns = await cache_hits(await stack.router(config(sim_url, POOL)))
    print(f"with affinity over {len(POOL)} keys: {tokens:.3f} of eligible tokens")
    assert tokens >= 0.9
    assert turns >= 0.9
    # The conversations spread over the pool rather than piling on a few keys.
    assert sum(sim.stats[k.name].served > 0 for k in POOL) >= 10


async def test_without_affinity_a_large_pool_spreads_turns_and_loses_the_cache(stack):
    sim, sim_url = await stack.sim(*POOL)
    router_url = await stack.router(config(sim_url, POOL, affinity=False))
    _, turns = await cache_hits(router_url)
    assert turns < 0.2  # about 1 in 40 turns reach the previous turn's key
    assert sum(sim.stats[k.name].served > 0 for k in POOL) >= 30


async def test_without_affinity_the_random_choice_loses_the_cache(stack):
    _, sim_url = await stack.sim(*KEYS)
    tokens, turns = await cache_hits(await stack.router(config(sim_url, affinity=False)))
    print(f"without affinity: {tokens:.3f} of eligible tokens, {turns:.3f} of turns")
    # About a quarter of the turns reach the key of the previous one; the others hit
    # only what their key kept of an older turn (the shared system prompt, at least).
    assert tokens < 0.75
    assert turns < 0.5


async def test_the_simulator_reports_cache_reads_as_anthropic_does(stack):
    ant = SimKey(name="ant", api_key="sk-ant-sim-key-000001")
    _, sim_url = await stack.sim(ant)
    sdk = anthropic.AsyncAnthropic(
        base_url=sim_url.removesuffix("/v1"), api_key=ant.api_key, max_retries=0
    )
    block = {
        "type": "text",
        "text": "a long question " * 50,
        "cache_control": {"type": "ephemeral"},
    }
    messages: list[Any] = [{"role": "user", "content": [block]}]
    first = await sdk.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="sys", messages=messages
    )
    assert first.usage.cache_read_input_tokens == 0
    written = first.usage.cache_creation_input_tokens
    assert written is not None and written > 0
    messages += [
        {"role": "assistant", "content": first.content[0].text},  # type: ignore[union-attr]
        {"role": "user", "content": "and then?"},
    ]
    second = await sdk.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="sys", messages=messages
    )
    read = second.usage.cache_read_input_tokens
    assert read is not None and read >= written
    await sdk.close()
