"""Many requests at once across limited keys: none lost, the spent key left alone."""

from __future__ import annotations

import asyncio
from collections import Counter

import openai

from router.sim import SimKey
from tests.configs import two_keys_config
from tests.conftest import HI, client


async def test_200_concurrent_requests_across_two_limited_keys_all_succeed(stack, clock):
    # Time is frozen for the simulator and the router alike: no bucket refills, so the
    # counts below are exact. Together the keys allow 260 requests; a alone only 60.
    a = SimKey(name="a", api_key="sk-sim-key-a-000001", rpm=60)
    b = SimKey(name="b", api_key="sk-sim-key-b-000002", rpm=200)
    sim, sim_url = await stack.sim(a, b, clock=clock)
    # Hundreds of copies of one conversation: with affinity they would all go to one key, so
    # the random spread this test is about needs it off.
    url = await stack.router(two_keys_config(sim_url, affinity=False), clock=clock)
    sdk = client(url, timeout=30)

    async def one() -> str:
        raw = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        raw.parse()
        return raw.headers["x-router-route"]

    routes = Counter(await asyncio.gather(*(one() for _ in range(200))))
    assert sum(routes.values()) == 200
    assert sim.stats["a"].served == routes["a/gpt-4o"] <= 60
    assert sim.stats["b"].served == routes["b/gpt-4o"]
    assert sim.stats["a"].served + sim.stats["b"].served == 200

    # Key a is spent and the router knows it (cooldown or headers): it is not tried again.
    a_requests = sim.stats["a"].requests
    later = Counter(await asyncio.gather(*(one() for _ in range(40))))
    assert later == {"b/gpt-4o": 40}
    assert sim.stats["a"].requests == a_requests

    # Past the pool's capacity the client gets 429 with a Retry-After, not a hang or a 5xx:
    # b has exactly `room` requests left, and everything beyond that is refused.
    room = 200 - sim.stats["b"].served
    assert 0 < room < 30
    outcomes = await asyncio.gather(*(one() for _ in range(30)), return_exceptions=True)
    served = [o for o in outcomes if o == "b/gpt-4o"]
    limited = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(served) == room
    assert len(limited) == 30 - room
    assert all(int(e.response.headers["retry-after"]) >= 1 for e in limited)
