"""POST /admin/restore?key=NAME: an operator puts a key back in rotation now (credit
added to a key out of quota), instead of waiting out `key_disable`."""

from __future__ import annotations

from typing import Any

import aiohttp

from router.sim import Fault
from tests.configs import preferring_a
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state, client
from tests.integration.test_costs import config as priced


async def restore(url: str, query: str = "?key=a", **headers: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/admin/restore{query}", headers=headers) as response,
    ):
        return response.status, await response.json()


async def served_by(url: str) -> str:
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    return raw.headers["x-router-route"]


async def test_a_key_out_of_quota_and_a_route_cooling_down_are_back_at_once(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.insufficient_quota())
    assert await served_by(url) == "b/gpt-4o"
    _, keys = await admin_state(url)
    assert keys["a"]["disabled_reason"] == "quota"
    assert await restore(url) == (200, {
        "status": "restored", "key": "a", "lifted": [{"name": "a", "reason": "quota"}],
    })  # fmt: skip
    assert await served_by(url) == "a/gpt-4o"
    sim.inject("a", Fault.rate_limit(retry_after=600))
    assert await served_by(url) == "b/gpt-4o"
    routes, _ = await admin_state(url)
    assert routes["a/gpt-4o"]["state"] == "cooling_down"
    assert await restore(url) == (200, {
        "status": "restored", "key": "a",
        "lifted": [{"name": "a/gpt-4o", "reason": "cooldown"}],
    })  # fmt: skip
    assert await served_by(url) == "a/gpt-4o"
    assert (await restore(url))[1]["lifted"] == []  # in rotation already: nothing to do


async def test_a_circuit_opened_by_failures_closes(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", *[Fault.server_error(500)] * 5)
    for _ in range(5):
        assert await served_by(url) == "b/gpt-4o"
    routes, _ = await admin_state(url)
    assert routes["a/gpt-4o"]["state"] == "circuit_open"
    status, answer = await restore(url)
    assert (status, answer["lifted"]) == (200, [{"name": "a/gpt-4o", "reason": "circuit_open"}])
    assert await served_by(url) == "a/gpt-4o"
    routes, _ = await admin_state(url)
    assert routes["a/gpt-4o"]["state"] == "available"


async def test_a_budgets_block_stays(stack):
    """A budget is a policy, not a failure: raising it (a reload) lifts its block."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(priced(sim_url, key_a={"budget": {"usd_per_day": 30}}))
    while await served_by(url) == "a/gpt-4o":  # each costs over $10: out by the 4th
        assert sim.stats["a"].served < 4
    assert (await restore(url))[1]["lifted"] == []
    assert await served_by(url) == "b/gpt-4o"
    _, keys = await admin_state(url)
    assert keys["a"]["disabled_reason"] == "budget"


async def test_a_missing_or_unknown_key_and_a_caller_without_the_admin_key_are_refused(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(preferring_a(sim_url))
    status, answer = await restore(url, "")
    assert (status, answer["status"]) == (400, "rejected")
    assert "?key=NAME" in answer["error"]
    status, answer = await restore(url, "?key=nope")
    assert (status, answer["status"]) == (404, "rejected")
    assert "'nope'" in answer["error"]
    guarded = await stack.router(
        preferring_a(sim_url, server={"admin_keys": ["admin-key-0123456789abcdef"]})
    )
    assert (await restore(guarded))[0] == 401
    status, answer = await restore(guarded, Authorization="Bearer admin-key-0123456789abcdef")
    assert (status, answer["lifted"]) == (200, [])
