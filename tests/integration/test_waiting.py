"""Waiting for capacity (failover.max_wait): a rate-limited request is held until its
route recovers rather than answered 429, within bounds, in arrival order.

Real time: the waits are short real cooldowns (a fraction of a second), since the
router sleeps on the loop's clock, not the health clock a FakeClock drives."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import openai
import pytest

from router.config import load_config
from router.server import bound_port, start
from router.sim import Fault, SimProvider
from tests.configs import model, route, routes_yaml, sim_keys
from tests.conftest import HI, SIM_A, client
from tests.integration.test_logs import logs  # noqa: F401  (the fixture)
from tests.integration.test_metrics import scrape
from tests.integration.test_reload import reload


def one_key(sim_url: str, *, model_fields: dict[str, Any] | None = None, **failover: Any) -> str:
    """gpt-4o on key a alone: when a is limited, the whole chain is."""
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A),
        models={"gpt-4o": model(route("a", "gpt-4o"), **(model_fields or {}))},
        **({"failover": failover} if failover else {}),
    )


async def send(url: str, user: str) -> tuple[int, Any]:
    """One chat request tagged `user`: (status, headers)."""
    raw = await client(url).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, user=user
    )
    return raw.status_code, raw.headers


async def metric(url: str, name: str) -> float:
    match = re.search(rf'^{name}\{{model="gpt-4o"\}} (\S+)$', await scrape(url), re.M)
    return float(match.group(1)) if match else 0.0


async def until_waiting(url: str, count: int) -> None:
    """Until `count` requests are held (the router's own gauge), bounded."""
    async with asyncio.timeout(10):
        while await metric(url, "llm_router_requests_waiting") != count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def users(sim: SimProvider) -> list[str]:
    return [json.loads(r.body)["user"] for r in sim.requests]


async def test_a_limited_request_waits_and_is_served_when_the_cooldown_ends(stack, logs):  # noqa: F811
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url))
    sim.inject("a", Fault.rate_limit(retry_after=0.3))
    status, headers = await send(url, "first")
    assert status == 200
    assert headers["x-router-attempts"] == "2"
    assert sim.stats["a"].requests == 2 and sim.stats["a"].served == 1
    assert await metric(url, "llm_router_waits_total") == 1
    assert await metric(url, "llm_router_wait_duration_seconds_count") == 1
    assert await metric(url, "llm_router_wait_duration_seconds_sum") > 0
    (event,) = [e for e in logs.events() if e["event"] == "request"]
    assert event["status"] == 200 and event["waited_ms"] > 0


async def test_a_wait_longer_than_max_wait_gets_429_at_once(stack):
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url))  # max_wait 15 by default
    sim.inject("a", Fault.rate_limit(retry_after=30))
    with pytest.raises(openai.RateLimitError) as caught:
        await send(url, "first")
    assert caught.value.response.headers["retry-after"] == "30"
    assert sim.stats["a"].requests == 1
    assert await metric(url, "llm_router_waits_total") == 0


@pytest.mark.parametrize(
    ("failover", "model_fields"),
    [
        pytest.param({"max_wait": 0}, None, id="failover.max_wait"),
        pytest.param({}, {"max_wait": 0}, id="the model's max_wait"),
    ],
)
async def test_max_wait_0_answers_429_as_without_waiting(stack, failover, model_fields):
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url, model_fields=model_fields, **failover))
    sim.inject("a", Fault.rate_limit(retry_after=0.3))
    with pytest.raises(openai.RateLimitError) as caught:
        await send(url, "first")
    assert caught.value.response.headers["x-router-attempts"] == "1"
    assert sim.stats["a"].requests == 1


async def test_the_whole_wait_over_every_round_stays_within_max_wait(stack, logs):  # noqa: F811
    # The key answers 429 again after its reset: the second cooldown would take the
    # request past max_wait, so it gets the 429 then instead of a second full wait.
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url, max_wait=1.0))
    sim.inject("a", Fault.rate_limit(retry_after=0.6), Fault.rate_limit(retry_after=0.6))
    with pytest.raises(openai.RateLimitError) as caught:
        await send(url, "first")
    assert caught.value.response.headers["x-router-attempts"] == "2"
    assert sim.stats["a"].requests == 2 and sim.stats["a"].served == 0
    (event,) = [e for e in logs.events() if e["event"] == "request"]
    assert event["status"] == 429 and 0 < event["waited_ms"] <= 1000
    assert await metric(url, "llm_router_waits_total") == 1


async def test_the_waiting_room_is_bounded_and_the_extra_request_gets_429(stack):
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url, max_waiting=1))
    sim.inject("a", Fault.rate_limit(retry_after=1.0))
    first = asyncio.create_task(send(url, "first"))
    await until_waiting(url, 1)
    with pytest.raises(openai.RateLimitError) as caught:
        await send(url, "second")
    assert caught.value.response.headers["x-router-attempts"] == "0"  # a is cooling down
    assert (await first)[0] == 200
    assert users(sim) == ["first", "first"]
    assert await metric(url, "llm_router_waits_total") == 1  # the refused one was not held


async def test_waiting_requests_are_served_in_arrival_order(stack):
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url))
    # Long enough for all four to be in line on a slow, busy machine before it ends:
    # at 0.5 s the first was served while the fourth was still on its way (CI).
    sim.inject("a", Fault.rate_limit(retry_after=2.0))
    tasks = [asyncio.create_task(send(url, "first"))]
    await until_waiting(url, 1)
    for count, name in enumerate(["second", "third", "fourth"], start=2):
        tasks.append(asyncio.create_task(send(url, name)))
        await until_waiting(url, count)
    assert [status for status, _ in await asyncio.gather(*tasks)] == [200] * 4
    assert users(sim) == ["first", "first", "second", "third", "fourth"]
    assert await metric(url, "llm_router_waits_total") == 4


async def test_a_client_that_leaves_while_waiting_leaves_the_line(stack):
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url, max_wait=5))
    sim.inject("a", Fault.rate_limit(retry_after=1.0))
    first = asyncio.create_task(send(url, "first"))
    await until_waiting(url, 1)
    second = asyncio.create_task(send(url, "second"))
    await until_waiting(url, 2)
    first.cancel()  # the SDK closes its connection: the router's handler is cancelled
    with pytest.raises(asyncio.CancelledError):
        await first
    await until_waiting(url, 1)
    assert (await second)[0] == 200  # the head left: the next waiter went
    assert users(sim) == ["first", "second"]
    await until_waiting(url, 0)
    assert await metric(url, "llm_router_waits_total") == 2  # the one that left counts too
    # Nothing of the one that left stays in the line: a newcomer goes straight through.
    assert (await send(url, "third"))[0] == 200
    assert await metric(url, "llm_router_waits_total") == 2


async def test_the_waiting_room_holds_its_bound_across_a_reload(stack, tmp_path):
    """One room for the process: requests still waiting on the config before a reload
    count against the new one's max_waiting (a room per config let each reload hold
    max_waiting more), and a reload that raises it lets more in at once."""
    sim, sim_url = await stack.sim(SIM_A)
    path = tmp_path / "routes.yaml"
    path.write_text(one_key(sim_url, max_waiting=1))
    runner = await start(load_config(path), "127.0.0.1", 0, config_path=path)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"
        # Long enough for the reloads and the requests between on a slow, busy machine.
        sim.inject("a", Fault.rate_limit(retry_after=2.0))
        first = asyncio.create_task(send(url, "first"))
        await until_waiting(url, 1)
        assert (await reload(url))[0] == 200  # the same file: max_waiting 1
        with pytest.raises(openai.RateLimitError):
            await send(url, "second")
        path.write_text(one_key(sim_url, max_waiting=2))
        assert (await reload(url))[0] == 200
        third = asyncio.create_task(send(url, "third"))
        await until_waiting(url, 2)
        assert [status for status, _ in await asyncio.gather(first, third)] == [200, 200]
        assert users(sim) == ["first", "first", "third"]  # in arrival order, across it
    finally:
        await runner.cleanup()


async def test_a_client_that_leaves_while_waiting_is_logged_with_what_it_tried(stack, logs):  # noqa: F811
    """Its 429 attempt and its wait are in the metrics; before, its log line said it
    tried nothing and waited nothing (the failover's walk went up with nothing)."""
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(one_key(sim_url))
    sim.inject("a", Fault.rate_limit(retry_after=5))
    with pytest.raises(openai.APITimeoutError):
        await client(url, timeout=0.5).chat.completions.create(model="gpt-4o", messages=HI)
    async with asyncio.timeout(5):
        while not [e for e in logs.events() if e["event"] == "request"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    (event,) = [e for e in logs.events() if e["event"] == "request"]
    assert (event["status"], event["outcome"]) == (499, "cancelled")
    assert event["attempts"] == ["a/gpt-4o:rate_limited"]
    assert event["waited_ms"] > 0
    assert await metric(url, "llm_router_waits_total") == 1
