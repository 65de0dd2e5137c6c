"""Several routers sharing one key pool through a real redis-server on 127.0.0.1.

Each test starts its own redis-server on a free port (Debian's package; `.ci/run`
installs it) and stops it, whatever happens; the routers run in this process, each
with its own app, store and clock, exactly as two replicas would.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from router.sim import Fault
from router.telemetry.logs import configure_logging, reset_logging
from tests.configs import (
    model,
    preferring_a,
    route,
    routes_yaml,
    sim_key,
    sim_keys,
    state_scope,
)
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state, client

pytestmark = pytest.mark.timeout(60)

PREFIX = "test-router"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process: started, killed, paused and restarted by the test."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.process = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        probe = aioredis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(OSError, aioredis.ConnectionError):
                        if await probe.ping():
                            return
                    await asyncio.sleep(0.02)
        finally:
            await probe.aclose()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # a paused one must die too
                self.process.kill()
            await self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    try:  # a start that fails (its probe, say) still stops the process it spawned
        await server.start()
        yield server
    finally:
        await server.kill()


def shared(redis_url: str) -> dict[str, Any]:
    return {"state": {"backend": "redis", "url": redis_url, "prefix": PREFIX}}


async def until(condition: Any, seconds: float = 5.0) -> None:
    """Poll: another process's state has no event to await."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _route_state(url: str, route_id: str) -> dict[str, Any]:
    routes, _ = await admin_state(url)
    return routes[route_id]


async def test_a_rate_limit_one_replica_sees_keeps_the_other_off_the_key(redis_server, stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(redis_server.url))
    replica_a, replica_b = await stack.router(text), await stack.router(text)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    raw = await client(replica_a).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI
    )
    assert raw.headers["x-router-route"] == "b/gpt-4o"  # a said 429: b served
    assert sim.stats["a"].requests == 1

    async def b_knows() -> bool:
        return (await _route_state(replica_b, "a/gpt-4o"))["state"] == "cooling_down"

    await until(b_knows, seconds=1.0)  # within a second, as the issue asks
    for _ in range(3):
        raw = await client(replica_b).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        assert raw.headers["x-router-route"] == "b/gpt-4o"
    assert sim.stats["a"].requests == 1  # replica B never called the limited key
    async with redis_server.client() as redis:
        ttl = await redis.pttl(f"{PREFIX}:block:{state_scope(text, 'route', 'a/gpt-4o')}")
    assert 25_000 < ttl <= 30_000  # a TTL, not a wall-clock time


async def test_a_replica_started_later_reads_the_shared_state(redis_server, stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(redis_server.url))
    first = await stack.router(text)
    sim.inject("a", Fault.insufficient_quota())
    await client(first).chat.completions.create(model="gpt-4o", messages=HI)
    async with redis_server.client() as redis:

        async def stored() -> bool:
            return await redis.get(f"{PREFIX}:block:{state_scope(text, 'key', 'a')}") == "quota"

        await until(stored)
    later = await stack.router(text)  # a restarted replica, say

    async def disabled() -> bool:
        _, keys = await admin_state(later)
        return keys["a"]["disabled_reason"] == "quota"

    await until(disabled)
    await client(later).chat.completions.create(model="gpt-4o", messages=HI)
    assert sim.stats["a"].requests == 1


async def test_the_later_deadline_wins_whichever_replica_writes_first(redis_server, stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(redis_server.url))
    replica_a, replica_b = await stack.router(text), await stack.router(text)
    # Both replicas try a at once, before either hears of the other: one is told to
    # wait 40 s, the other 5 s, in whichever order the simulator serves them.
    sim.inject("a", Fault.rate_limit(retry_after=40), Fault.rate_limit(retry_after=5))
    await asyncio.gather(
        *(
            client(url).chat.completions.create(model="gpt-4o", messages=HI)
            for url in (replica_a, replica_b)
        )
    )
    assert sim.stats["a"].requests == 2
    async with redis_server.client() as redis:
        await until(lambda: _cooling_for_more_than(replica_a, 30))
        await until(lambda: _cooling_for_more_than(replica_b, 30))
        block = f"{PREFIX}:block:{state_scope(text, 'route', 'a/gpt-4o')}"
        assert await redis.pttl(block) > 30_000


async def _cooling_for_more_than(url: str, seconds: float) -> bool:
    state = await _route_state(url, "a/gpt-4o")
    return state["state"] == "cooling_down" and state["available_in_seconds"] > seconds


PRICE = {"input_per_mtok": 1000000, "output_per_mtok": 2000000}  # a dollar a token


def _budgeted(sim_url: str, redis_url: str | None, usd_per_day: float) -> str:
    gpt_4o = model(route("a", "gpt-4o", price=PRICE), route("b", "gpt-4o", priority=2, price=PRICE))
    return routes_yaml(
        keys=[
            sim_key(SIM_A, sim_url, budget={"usd_per_day": usd_per_day}),
            *sim_keys(sim_url, SIM_B, SIM_C),
        ],
        models={"gpt-4o": gpt_4o, "gpt-4o-mini": model(route("c", "gpt-4o-mini"))},
        **(shared(redis_url) if redis_url else {}),
    )


async def _cost(url: str) -> tuple[str, float]:
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    return raw.headers["x-router-route"], float(raw.headers["x-router-cost-usd"])


async def test_spend_is_summed_across_replicas_and_the_budget_holds_for_all(redis_server, stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    # One request's cost, to set a budget that two replicas reach together and
    # neither reaches alone.
    _, one = await _cost(await stack.router(_budgeted(sim_url, None, 1e9)))
    replica_a = await stack.router(_budgeted(sim_url, redis_server.url, 2.5 * one))
    replica_b = await stack.router(_budgeted(sim_url, redis_server.url, 2.5 * one))
    async with redis_server.client() as redis:

        def summed(times: int) -> Any:
            async def check() -> bool:  # the day's total and the month's
                keys = await redis.keys(f"{PREFIX}:total:spend:key:a:*")
                values = [float(await redis.get(k)) for k in keys]
                return len(values) == 2 and all(abs(v - times * one) < 1e-6 for v in values)

            return check

        assert (await _cost(replica_a))[0] == "a/gpt-4o"
        assert (await _cost(replica_a))[0] == "a/gpt-4o"
        # Replica B hears of A's spend as Redis sums it (the message leaves with the
        # sum); a request B settles in that same millisecond could overshoot by one.
        await until(summed(2))
        await asyncio.sleep(0.05)
        assert (await _cost(replica_b))[0] == "a/gpt-4o"  # the third: 3 x one >= 2.5 x one
        await until(summed(3))

    async def out_on(url: str) -> bool:
        _, keys = await admin_state(url)
        return keys["a"]["disabled_reason"] == "budget"

    await until(lambda: out_on(replica_a), seconds=1.0)
    await until(lambda: out_on(replica_b), seconds=1.0)
    served = sim.stats["a"].served
    for url in (replica_a, replica_b):
        assert (await _cost(url))[0] == "b/gpt-4o"
    assert sim.stats["a"].served == served


async def test_a_model_one_replica_puts_over_its_budget_shows_out_on_the_other(redis_server, stack):
    """Replica A's spend takes gpt-4o out; replica B serves its fallback and says so in
    /admin/routes, /readyz and /metrics (LLMRouterModelOverBudget reads any pod)."""
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = _model_budgeted(sim_url, redis_server.url, 1)
    replica_a, replica_b = await stack.router(text), await stack.router(text)
    assert (await _cost(replica_a))[0] == "a/gpt-4o"  # a dollar a token: over $1 now

    async def out_on_b() -> bool:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{replica_b}/admin/routes") as response:
                admin = await response.json()
            async with session.get(f"{replica_b}/metrics") as response:
                page = await response.text()
        return [m["model"] for m in admin["models_disabled"]] == ["gpt-4o"] and (
            'llm_router_model_disabled{model="gpt-4o",reason="budget"} 1.0' in page
        )

    await until(out_on_b, seconds=2.0)
    assert (await _cost(replica_b))[0] == "c/gpt-4o-mini"
    assert (await _readyz(replica_b))[1]["models_disabled"] == 1


def _model_budgeted(sim_url: str, redis_url: str, usd_per_month: float) -> str:
    """gpt-4o on a at a dollar a token with a monthly budget, falling back to gpt-4o-mini."""
    gpt_4o = model(route("a", "gpt-4o", price=PRICE), fallback=["gpt-4o-mini"])
    gpt_4o["budget"] = {"usd_per_month": usd_per_month}
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B, SIM_C),
        models={"gpt-4o": gpt_4o, "gpt-4o-mini": model(route("c", "gpt-4o-mini"))},
        **shared(redis_url),
    )


async def test_a_replica_started_with_a_raised_budget_brings_the_model_back(redis_server, stack):
    """A block on Redis from an earlier config: a replica on the same budget keeps the
    model out; one started on a raised budget (a rollout) lifts it for every replica."""
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    first = await stack.router(_model_budgeted(sim_url, redis_server.url, 1))
    assert (await _cost(first))[0] == "a/gpt-4o"  # over $1 now
    block = f"{PREFIX}:block:model:gpt-4o"
    async with redis_server.client() as redis:
        await until(lambda: redis.exists(block))
        same = await stack.router(_model_budgeted(sim_url, redis_server.url, 1))
        assert (await _cost(same))[0] == "c/gpt-4o-mini"
        raised = await stack.router(_model_budgeted(sim_url, redis_server.url, 1_000_000))
        assert (await _cost(raised))[0] == "a/gpt-4o"  # the first request already
        await until(lambda: _gone(redis, block))

    async def back_on_first() -> bool:
        admin = await admin_state_json(first)
        return admin["models_disabled"] == []

    await until(back_on_first)  # lifted on Redis and told to the others


async def test_a_replica_started_while_redis_is_away_rechecks_once_it_is_read(redis_server, stack):
    """Its first read fails (Redis paused): no recheck on an empty copy, which would lift
    nothing, nor on a copy read in part. Once Redis answers and a reconciliation has
    read it whole, the raised budget lifts the block for everyone."""
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    first = await stack.router(_model_budgeted(sim_url, redis_server.url, 1))
    assert (await _cost(first))[0] == "a/gpt-4o"  # over $1 now
    block = f"{PREFIX}:block:model:gpt-4o"
    async with redis_server.client() as redis:
        await until(lambda: redis.exists(block))
    redis_server.pause()
    try:
        await stack.router(_model_budgeted(sim_url, redis_server.url, 1_000_000))
    finally:
        redis_server.resume()
    async with redis_server.client() as redis:
        assert await redis.exists(block)  # nothing lifted from a copy that had not read it
        await until(lambda: _gone(redis, block), seconds=15.0)  # the next reconciliation


async def _gone(redis: Any, key: str) -> bool:
    return not await redis.exists(key)


async def admin_state_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/admin/routes") as response:
        return await response.json()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(stream=stream, cache_loggers=False)
    try:
        yield stream
    finally:
        reset_logging()


def _events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    return [line for line in lines if line["event"] == name]


async def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def test_redis_killed_mid_load_loses_no_request(redis_server, stack, logs):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(redis_server.url))
    replicas = [await stack.router(text), await stack.router(text)]
    sim.inject("a", Fault.rate_limit(retry_after=30))  # a write for Redis to carry

    async def ask(n: int) -> int:
        if n == 20:
            await redis_server.kill()
        raw = await client(replicas[n % 2]).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        return raw.status_code

    statuses = [await ask(n) for n in range(40)]
    assert statuses == [200] * 40
    sim.inject("a", Fault.rate_limit(retry_after=30), times=-1)  # more writes, Redis gone

    async def degraded() -> bool:
        status, body = await _readyz(replicas[0])
        await client(replicas[0]).chat.completions.create(model="gpt-4o", messages=HI)
        return status == 200 and body["state_store"]["status"] == "degraded"

    await until(degraded)
    status, body = await _readyz(replicas[0])
    assert status == 200 and "error" in body["state_store"]  # ready, and it says why
    async with aiohttp.ClientSession() as session, session.get(f"{replicas[0]}/metrics") as page:
        assert "llm_router_state_store_degraded 1.0" in await page.text()
    # Once per outage and replica, not once per failed write.
    assert len(_events(logs, "state_store_degraded")) == 2


async def test_a_paused_redis_holds_no_request(redis_server, stack):
    """SIGSTOP: Redis's sockets stay open and answer nothing, which is worse than down.
    Nothing on the request path waits for it; the writer times out in the background."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(preferring_a(sim_url, **shared(redis_server.url)))
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    redis_server.pause()
    try:
        sim.inject("a", Fault.rate_limit(retry_after=30), times=-1)  # each one a write
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(10):
            raw = await client(url).chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HI
            )
            assert raw.status_code == 200
        # Had each request waited for Redis's 0.25 s timeout, ten would take 2.5 s.
        assert loop.time() - started < 2.0

        async def degraded() -> bool:
            return (await _readyz(url))[1]["state_store"]["status"] == "degraded"

        await until(degraded)
    finally:
        redis_server.resume()

    async def recovered() -> bool:
        return (await _readyz(url))[1]["state_store"]["status"] == "ok"

    await until(recovered, seconds=10)


async def test_a_restarted_empty_redis_gets_the_replicas_state_back(redis_server, stack, logs):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(redis_server.url))
    url = await stack.router(text)
    sim.inject("a", Fault.rate_limit(retry_after=60))
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    key = f"{PREFIX}:block:{state_scope(text, 'route', 'a/gpt-4o')}"
    async with redis_server.client() as redis:
        await until(lambda: redis.exists(key))
    await redis_server.kill()
    await redis_server.start()  # the same port, nothing in it
    async with redis_server.client() as redis:
        await until(lambda: redis.exists(key), seconds=10)
        assert 50_000 < await redis.pttl(key) <= 60_000

    async def recovered() -> bool:  # once its subscriber too is back, after its backoff
        return bool(_events(logs, "state_store_recovered"))

    await until(recovered, seconds=10)
    await asyncio.sleep(0.5)
    assert len(_events(logs, "state_store_recovered")) == 1
    assert len(_events(logs, "state_store_degraded")) == 1


async def test_a_router_starts_and_serves_with_redis_down(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    nowhere = f"redis://127.0.0.1:{_free_port()}/0"
    url = await stack.router(preferring_a(sim_url, **shared(nowhere)))
    for _ in range(3):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert sim.stats["a"].served == 3

    async def degraded() -> bool:
        status, body = await _readyz(url)
        return status == 200 and body["state_store"]["status"] == "degraded"

    await until(degraded)


async def test_one_replica_probes_a_circuit_that_lapsed_not_all(redis_server, stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    breaker = {"breaker_failures": 1, "breaker_open": 0.5}
    text = preferring_a(sim_url, failover=breaker, **shared(redis_server.url))
    replica_a, replica_b = await stack.router(text), await stack.router(text)
    sim.inject("a", Fault.server_error(500))
    await client(replica_a).chat.completions.create(model="gpt-4o", messages=HI)  # a opens

    async def open_on_b() -> bool:
        return (await _route_state(replica_b, "a/gpt-4o"))["state"] == "circuit_open"

    await until(open_on_b, seconds=1.0)
    await asyncio.sleep(0.6)  # the open period lapses on both: each may probe now
    sim.inject("a", Fault.delay(1.0))  # the probe takes a second
    probe = asyncio.create_task(
        client(replica_a).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    )

    async def b_leaves_it_to_a() -> bool:
        return (await _route_state(replica_b, "a/gpt-4o"))["reason"] == "probing"

    await until(b_leaves_it_to_a, seconds=1.0)
    raw = await client(replica_b).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI
    )
    assert raw.headers["x-router-route"] == "b/gpt-4o"
    assert (await probe).headers["x-router-route"] == "a/gpt-4o"  # the probe succeeded
    assert sim.stats["a"].requests == 2  # the failure and the one probe

    async def closed_on_b() -> bool:
        return (await _route_state(replica_b, "a/gpt-4o"))["state"] == "available"

    await until(closed_on_b, seconds=1.0)  # the probe's success lifts the lease


async def test_shared_values_that_are_no_finite_duration_or_amount_are_not_taken(redis_server):
    """Another writer of the shared Redis (a broken replica, a hand edit, a hostile
    client) sends a block of 1e300 or infinite ms, a NaN spend, headroom with a count that
    is no count, a JSON array, or leaves a key of another type where a block goes: none
    of it is taken, nothing of it degrades the replica, and reading the state back goes
    on past the bad key."""
    from router.health.memory import MemoryStore
    from router.health.redis_store import RedisStore
    from router.outcomes import BlockReason

    local = MemoryStore(time.monotonic)
    store = RedisStore(local, redis_server.url, "rv", time.monotonic)
    redis = aioredis.from_url(redis_server.url)
    store.start()
    try:
        async with asyncio.timeout(5):
            await store.loaded()
        bad = [
            {"op": "block", "scope": "route:a", "reason": "cooldown", "ms": 1e300},
            {"op": "block", "scope": "route:b", "reason": "cooldown", "ms": float("inf")},
            {"op": "block", "scope": "route:c", "reason": "cooldown", "ms": -5},
            {"op": "spend", "total": "spend:key:k:", "value": "nan", "ms": 60_000},
            {"op": "spend", "total": "spend:key:j:", "value": "inf", "ms": 60_000},
            {"op": "headroom", "scope": "route:e", "value": '{"remaining_tokens": "many"}',
             "ms": 60_000},
            [1],
        ]  # fmt: skip
        for message in bad:
            await redis.publish("rv:events", json.dumps(message))
        await redis.hset("rv:block:route:x", "a", "b")  # WRONGTYPE for a GET
        await redis.set("rv:block:route:y", "cooldown", px=30_000)
        await redis.set("rv:headroom:route:f", '{"remaining_requests": -1}', px=30_000)
        good = {"op": "block", "scope": "route:d", "reason": "cooldown", "ms": 30_000}
        await redis.publish("rv:events", json.dumps(good))

        async def arrived() -> bool:
            return local.peek("route:d") is not None

        await until(arrived)
        await store._reconcile()  # past the hash at route:x, to route:y
        assert local.peek("route:y") is not None
        assert local.peek("route:y").block.reason is BlockReason.COOLDOWN
        for scope in ("route:a", "route:b", "route:c", "route:e", "route:f"):
            assert local.peek(scope) is None, scope
        assert await local.add("spend:key:k:", 1.0, 60) == 1.0  # no NaN under it
        assert await local.add("spend:key:j:", 1.0, 60) == 1.0
        assert store.degraded() is None
    finally:
        await store.close()
        await redis.aclose()


async def _store(url: str, prefix: str) -> Any:
    """A RedisStore on `url`, started and loaded."""
    from router.health.memory import MemoryStore
    from router.health.redis_store import RedisStore

    store = RedisStore(MemoryStore(time.monotonic), url, prefix, time.monotonic)
    store.start()
    async with asyncio.timeout(5):
        await store.loaded()
    return store


class _Relay:
    """A TCP relay to Redis. While `late`, the answer to each script run waits 0.4 s:
    longer than the writer waits (SOCKET_TIMEOUT), after Redis has applied it; other
    answers (the client's handshake, SCRIPT EXISTS) pass at once, so the runs are sent.
    While `swallow`, what the client sends is dropped (`swallowed` is set). While
    `slow_reads`, the answer to a reconciliation's read (PTTL) waits 0.2 s, within the
    client's timeout."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.late = False
        self.swallow = False
        self.swallowed = asyncio.Event()
        self.slow_reads = False

    async def relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        redis, to_redis = await asyncio.open_connection("127.0.0.1", self.port)
        ran_script = read = False

        async def ask() -> None:
            nonlocal ran_script, read
            while data := await client.read(65536):
                if self.swallow:
                    self.swallowed.set()
                    continue
                ran_script = b"EVALSHA" in data
                read = self.slow_reads and b"PTTL" in data
                to_redis.write(data)
                await to_redis.drain()

        async def answer() -> None:
            while data := await redis.read(65536):
                if self.late and ran_script:
                    await asyncio.sleep(0.4)
                elif read:
                    await asyncio.sleep(0.2)
                to_client.write(data)
                await to_client.drain()

        try:
            await asyncio.gather(ask(), answer(), return_exceptions=True)
        finally:
            to_client.close()
            to_redis.close()


@contextlib.asynccontextmanager
async def _relayed(redis_server: RedisServer) -> AsyncIterator[tuple[_Relay, str]]:
    relay = _Relay(redis_server.port)
    server = await asyncio.start_server(relay.relay, "127.0.0.1", 0)
    try:
        yield relay, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    finally:
        server.close()
        await server.wait_closed()


async def test_spend_sent_again_after_a_late_answer_is_counted_once(redis_server):
    """Redis applied a batch but its answer came after the writer's timeout: the batch
    goes again, and its spend is not added twice."""
    redis = redis_server.client()
    async with _relayed(redis_server) as (relay, url):
        store = await _store(url, "sp1")
        try:
            await store.add("spend:key:a:d", 1.0, 3600)
            await until(lambda: _total_is(redis, "sp1:total:spend:key:a:d", 1.0))
            relay.late = True
            await store.add("spend:key:a:d", 1.0, 3600)
            await until(lambda: _total_is(redis, "sp1:total:spend:key:a:d", 2.0))
            await asyncio.sleep(0.5)
            relay.late = False
            await asyncio.sleep(1.5)  # the batch sent again, after its backoff, has landed
            assert float(await redis.get("sp1:total:spend:key:a:d")) == 2.0
        finally:
            await store.close()
            await redis.aclose()


async def test_spend_held_back_during_an_outage_is_not_raised_and_added_both(redis_server):
    """A batch lands unconfirmed (its answer late), and more is spent while the replica
    is degraded: that is held back behind the batch. On recovery the replica raises
    Redis's total to its own, which held the held-back spend too, and the next batch
    then added it again: a replica over-counted by a third after a 15 s pause of Redis,
    and a budget turned a key off that had not spent it (helper-66)."""
    redis = redis_server.client()
    async with _relayed(redis_server) as (relay, url):
        store = await _store(url, "sp4")

        async def degraded() -> bool:
            return store.degraded() is not None

        async def recovered() -> bool:
            return store.degraded() is None

        try:
            await store.add("spend:key:a:d", 1.0, 3600)
            await until(lambda: _total_is(redis, "sp4:total:spend:key:a:d", 1.0))
            relay.late = True
            await store.add("spend:key:a:d", 1.0, 3600)  # lands, its answer late
            await until(lambda: _total_is(redis, "sp4:total:spend:key:a:d", 2.0))
            await until(degraded)
            await store.add("spend:key:a:d", 1.0, 3600)  # held back behind that batch
            relay.late = False
            await until(recovered)
            await asyncio.sleep(1.0)  # the held-back batch, after the resync, has landed
            assert float(await redis.get("sp4:total:spend:key:a:d")) == 3.0
        finally:
            await store.close()
            await redis.aclose()


async def test_a_write_under_way_at_shutdown_is_sent_at_close(redis_server):
    """close() cancels the writer while its batch is on the wire, unanswered: the batch
    is not lost with the writer, and close() sends it."""
    redis = redis_server.client()
    async with _relayed(redis_server) as (relay, url):
        store = await _store(url, "sp3")
        try:
            relay.swallow = True
            await store.add("spend:key:a:d", 1.0, 3600)
            async with asyncio.timeout(5):
                await relay.swallowed.wait()  # the writer waits for an answer now
            relay.swallow = False
        finally:
            await store.close()
        try:
            assert float(await redis.get("sp3:total:spend:key:a:d") or 0) == 1.0
        finally:
            await redis.aclose()


async def test_a_command_redis_refuses_holds_no_other_write_back(redis_server):
    """A total that is no number (another writer's garbage) refuses the spend added to
    it: that one write is dropped, with a warning; the rest of its batch lands once, and
    the replica is not degraded."""
    redis = redis_server.client()
    await redis.set("sp2:total:spend:model:bad:", "garbage", px=3_600_000)
    store = await _store(redis_server.url, "sp2")
    try:
        await store.add("spend:key:a:", 1.0, 3600)
        await store.add("spend:model:bad:", 1.0, 3600)
        await until(lambda: _total_is(redis, "sp2:total:spend:key:a:", 1.0))
        await asyncio.sleep(1.0)  # a batch sent again would have added more by now
        assert float(await redis.get("sp2:total:spend:key:a:")) == 1.0
        assert await redis.get("sp2:total:spend:model:bad:") == "garbage"
        assert store.degraded() is None
    finally:
        await store.close()
        await redis.aclose()


async def _total_is(redis: Any, key: str, value: float) -> bool:
    raw = await redis.get(key)
    return raw is not None and float(raw) == value


def _on_account(sim_url: str, redis_url: str, organization: str) -> str:
    """gpt-4o on key a (the account `organization` names), then b."""
    return routes_yaml(
        keys=[
            sim_key(SIM_A, sim_url, headers={"OpenAI-Organization": organization}),
            *sim_keys(sim_url, SIM_B),
        ],
        models={"gpt-4o": model(route("a", "gpt-4o"), route("b", "gpt-4o", priority=2))},
        **shared(redis_url),
    )


async def _served_by(url: str) -> str:
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    return raw.headers["x-router-route"]


async def test_a_new_account_under_a_keys_name_starts_clean_on_every_replica(
    redis_server, stack, tmp_path, monkeypatch
):
    """Key a runs out of quota (out for an hour, on every replica). The operator puts
    another account under the name a: a replica started on it, and the first replica
    reloaded onto it, serve from a at once, and still do once Redis has been read again;
    a replica still on the old account keeps that one out."""
    from router.health import redis_store
    from tests.integration.test_reload import reload, router_for

    monkeypatch.setattr(redis_store, "RECONCILE_SECONDS", 0.2)
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    old, new = (_on_account(sim_url, redis_server.url, org) for org in ("org-1", "org-2"))
    path = tmp_path / "routes.yaml"
    path.write_text(old)
    async with router_for(path) as first:
        sim.inject("a", Fault.insufficient_quota())
        assert await _served_by(first) == "b/gpt-4o"
        stale = await stack.router(old)

        async def stale_knows() -> bool:
            _, keys = await admin_state(stale)
            return keys["a"]["disabled_reason"] == "quota"

        await until(stale_knows)
        assert await _served_by(await stack.router(new)) == "a/gpt-4o"
        path.write_text(new)
        assert (await reload(first))[0] == 200
        assert await _served_by(first) == "a/gpt-4o"
        await asyncio.sleep(1.0)  # Redis read again, several times
        assert await _served_by(first) == "a/gpt-4o"
        assert await _served_by(stale) == "b/gpt-4o"
    assert sim.stats["a"].served == 3


async def test_a_key_restored_on_one_replica_is_back_on_every_one(redis_server, stack):
    from tests.integration.test_restore import restore

    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(redis_server.url))
    first, second = await stack.router(text), await stack.router(text)
    sim.inject("a", Fault.insufficient_quota())
    assert await _served_by(first) == "b/gpt-4o"

    async def out_on_second() -> bool:
        _, keys = await admin_state(second)
        return keys["a"]["disabled_reason"] == "quota"

    await until(out_on_second)
    status, answer = await restore(second)
    assert (status, answer["lifted"]) == (200, [{"name": "a", "reason": "quota"}])

    async def back_on_first() -> bool:
        _, keys = await admin_state(first)
        return keys["a"]["disabled_reason"] is None

    await until(back_on_first)
    assert await _served_by(first) == "a/gpt-4o"
    async with redis_server.client() as redis:
        assert not await redis.exists(f"{PREFIX}:block:{state_scope(text, 'key', 'a')}")


async def test_writes_redis_cannot_take_for_now_are_sent_again_once_it_can(redis_server):
    """OOM (as LOADING, READONLY after a failover, BUSY) refuses a command for Redis's
    state at the time, not for what it asks: the batch waits, the replica says it is
    degraded, and every write lands once Redis can take it, its spend once."""
    from router.outcomes import BlockReason

    redis = redis_server.client()
    store = await _store(redis_server.url, "oom")
    try:
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", "1")
        await store.add("spend:key:a:2026-12", 5.0, 3600)
        await store.block("key:a@x", 3600, BlockReason.QUOTA)

        async def degraded() -> bool:
            return store.degraded() is not None

        await until(degraded)
        await redis.config_set("maxmemory", "0")
        await until(lambda: _total_is(redis, "oom:total:spend:key:a:2026-12", 5.0), seconds=10)
        assert await redis.get("oom:block:key:a@x") == "quota"

        async def recovered() -> bool:
            return store.degraded() is None

        await until(recovered)
        await asyncio.sleep(0.5)  # nothing more is added by a batch sent again
        assert float(await redis.get("oom:total:spend:key:a:2026-12")) == 5.0
    finally:
        await redis.config_set("maxmemory", "0")
        await store.close()
        await redis.aclose()


async def test_a_lift_made_while_its_block_is_on_the_wire_wins(redis_server):
    """The batch with a block times out unanswered (Redis applied it) and goes back to
    the pending writes; a lift of the same scope made meanwhile (an operator's restore)
    is the newer write, and it is the one every replica ends with."""
    from router.outcomes import BlockReason

    redis = redis_server.client()
    scope = "key:a@acct"
    async with _relayed(redis_server) as (relay, url):
        a, b = await _store(url, "lift"), await _store(redis_server.url, "lift")
        try:
            relay.late = True
            await a.block(scope, 3600, BlockReason.QUOTA)
            await asyncio.sleep(0.15)  # the batch is on the wire
            await a.lift(scope, BlockReason.QUOTA)
            await asyncio.sleep(0.3)
            relay.late = False

            async def lifted_everywhere() -> bool:
                state = b.peek(scope)
                return (state is None or state.block is None) and not await redis.exists(
                    f"lift:block:{scope}"
                )

            await until(lifted_everywhere)
            await asyncio.sleep(1.0)  # and it stays so
            assert await lifted_everywhere()
        finally:
            await a.close()
            await b.close()
            await redis.aclose()


async def test_a_lift_made_in_an_outage_is_not_undone_by_a_replica_that_missed_it(
    redis_server,
):
    """Redis restarts empty; replica A lifts a block meanwhile (an operator's restore)
    and writes the lift once Redis is back; replica B, cut off until after that, never
    hears it and pushes its old copy back. Before, that set the block again in Redis and
    told A, and the key stayed out for its whole disable period (helper-66). The lift
    leaves a mark in Redis that refuses such a push."""
    from router.outcomes import BlockReason

    scope = "key:a@acct"
    redis = redis_server.client()
    async with _relayed(redis_server) as (relay, url):
        a, b = await _store(redis_server.url, "miss"), await _store(url, "miss")

        async def blocked_on_b() -> bool:
            state = b.peek(scope)
            return state is not None and state.block is not None

        async def a_recovered() -> bool:
            return a.degraded() is None

        async def b_recovered() -> bool:
            return b.degraded() is None

        try:
            await a.block(scope, 3600, BlockReason.QUOTA)
            await until(blocked_on_b)
            relay.swallow = True  # nothing B sends reaches Redis from now on
            await redis_server.kill()
            await a.lift(scope, BlockReason.QUOTA)
            await redis_server.start()  # the same port, nothing in it

            async def b_degraded() -> bool:
                return b.degraded() is not None

            await until(b_degraded, seconds=15)
            await until(a_recovered, seconds=15)
            await asyncio.sleep(0.5)  # A's lift is in Redis; B heard nothing of it
            relay.swallow = False
            await until(b_recovered, seconds=15)
            await asyncio.sleep(1.0)  # B's push of its copy has been sent
            assert not await redis.exists(f"miss:block:{scope}")
            state = a.peek(scope)
            assert state is None or state.block is None
        finally:
            await a.close()
            await b.close()
            await redis.aclose()


async def test_two_lifts_of_one_scope_both_reach_the_other_replicas(redis_server):
    """A probe's success lifts CIRCUIT_OPEN and PROBING at once: both are sent."""
    from router.outcomes import BlockReason

    a, b = await _store(redis_server.url, "two"), await _store(redis_server.url, "two")
    scope = "route:a/gpt-4o@acct"
    try:
        await a.block(scope, 60, BlockReason.CIRCUIT_OPEN)
        await until(lambda: _blocked(b, scope))
        await a.lift(scope, BlockReason.CIRCUIT_OPEN)
        await a.lift(scope, BlockReason.PROBING)
        await until(lambda: _blocked(b, scope, expected=False))
    finally:
        await a.close()
        await b.close()


async def test_a_batchs_set_of_applied_spend_goes_once_its_answer_came(redis_server):
    """Each batch's spend carries its id in a set that Redis keeps 15 minutes; a busy
    replica made one a batch (about 16 a second). Once the answer has come, nothing
    will send that batch again: the next write deletes its set."""
    redis = redis_server.client()
    store = await _store(redis_server.url, "ap")
    try:
        for _ in range(8):
            await store.add("spend:key:a:d", 1.0, 3600)
            await asyncio.sleep(0.1)  # a batch each
        await until(lambda: _total_is(redis, "ap:total:spend:key:a:d", 8.0))
        assert len(await redis.keys("ap:applied:*")) <= 2
    finally:
        await store.close()
        await redis.aclose()


async def test_a_lift_is_not_undone_by_a_read_sent_before_it(redis_server):
    """A reconciliation read reaches Redis before another replica's lift (an operator's
    restore) and is answered after the lift's message: the block it read is older than
    the lift, and is not put back (it would stay for the rest of key_disable)."""
    from router.outcomes import BlockReason

    scope = "key:a@acct"
    async with _relayed(redis_server) as (relay, url):
        a, b = await _store(redis_server.url, "x"), await _store(url, "x")
        try:
            await a.block(scope, 3600, BlockReason.QUOTA)
            await until(lambda: _blocked(b, scope))
            relay.slow_reads = True
            read = asyncio.create_task(b._reconcile())  # as its loop does every 5 s
            await asyncio.sleep(0.03)  # read by Redis; the answer is on its way
            await a.lift(scope, BlockReason.QUOTA)
            await read
            relay.slow_reads = False
            await asyncio.sleep(0.3)
            assert await _blocked(b, scope, expected=False)
        finally:
            await a.close()
            await b.close()


async def _blocked(store: Any, scope: str, *, expected: bool = True) -> bool:
    """Whether `store`'s copy has `scope` blocked, as `expected`."""
    state = store.peek(scope)
    return (state is not None and state.block is not None) is expected


async def test_a_lift_is_not_undone_by_its_own_replicas_read_before_it_reached_redis(
    redis_server,
):
    """An operator's restore lifts the block here at once and in Redis with the next
    write, 50 ms on; this replica's reconciliation read that begins in between still
    finds the block in Redis. It must not take it back into the copy, where it would
    stay for the rest of its hour (the replica ignores its own message of the lift)."""
    from router.outcomes import BlockReason

    redis = redis_server.client()
    scope = "key:a@acct"
    a = await _store(redis_server.url, "own")
    try:
        await _blocked_in_redis(a, redis, f"own:block:{scope}", scope)
        await a.lift(scope, BlockReason.AUTH)
        await a._reconcile()  # as its loop does every 5 s, before the lift is written
        await _lifted_everywhere(a, redis, f"own:block:{scope}", scope)
    finally:
        await a.close()
        await redis.aclose()


async def test_a_restore_made_while_redis_is_away_is_not_undone_when_it_returns(redis_server):
    """Key a is blocked on every replica; Redis goes away; the operator restores a on
    this replica. Another replica that never heard of the restore pushes its old copy
    back once Redis returns, and its block reaches this one before this one's own
    write: the lift, the newer, still goes to Redis, and this copy stays restored."""
    from router.outcomes import BlockReason

    redis = redis_server.client()
    scope = "key:a@acct"
    b = await _store(redis_server.url, "away")
    try:
        await _blocked_in_redis(b, redis, f"away:block:{scope}", scope)
        redis_server.pause()
        try:
            await b.lift(scope, BlockReason.AUTH)  # the operator's restore, not written
            await until(lambda: _is_degraded(b, True))
            # The other replica's push, once Redis is back, as this one's subscriber
            # hands it over.
            pushed = {"from": "other", "op": "block", "scope": scope, "reason": "auth",
                      "ms": 3_000_000}  # fmt: skip
            await b._incoming.message(json.dumps(pushed).encode())
            assert await _blocked(b, scope)
        finally:
            redis_server.resume()
        await until(lambda: _is_degraded(b, False), seconds=10)
        await _lifted_everywhere(b, redis, f"away:block:{scope}", scope)
    finally:
        await b.close()
        await redis.aclose()


async def test_spend_from_an_outage_is_written_at_shutdown_once_redis_is_back(redis_server):
    """A replica shut down just after Redis came back, while its writer still waits out
    its backoff, writes the spend it holds at close rather than lose it."""
    redis = redis_server.client()
    store = await _store(redis_server.url, "blip")
    try:
        redis_server.pause()
        try:
            await store.add("spend:key:a:d", 3.0, 3600)
            await until(lambda: _is_degraded(store, True))
        finally:
            redis_server.resume()
    finally:
        await store.close()  # within the writer's backoff of half a second
    try:
        assert float(await redis.get("blip:total:spend:key:a:d") or 0) == 3.0
    finally:
        await redis.aclose()


async def test_spend_held_through_an_outage_is_one_batch_a_total(redis_server, monkeypatch):
    """Each write Redis did not take sealed the spend since into a batch of its own, all
    kept to be sent again: the writes waiting grew with the outage's length (720 an
    hour a total). One batch a total is kept unconfirmed; spend after it is summed."""
    from router.health import redis_store

    monkeypatch.setattr(redis_store, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(redis_store, "BACKOFF_MAX", 0.01)
    redis = redis_server.client()
    store = await _store(redis_server.url, "grow")
    try:
        redis_server.pause()
        try:
            await until(lambda: _is_degraded(store, False))
            for _ in range(16):  # over a second: several writes time out meanwhile
                await store.add("spend:key:a:d", 1.0, 3600)
                await store.add("spend:model:m:d", 0.5, 3600)
                await asyncio.sleep(0.08)
            await until(lambda: _is_degraded(store, True))
        finally:
            redis_server.resume()
        await until(lambda: _total_is(redis, "grow:total:spend:key:a:d", 16.0), seconds=10)
        await until(lambda: _total_is(redis, "grow:total:spend:model:m:d", 8.0))
        # A set of applied totals per batch sent: the one sealed before the outage, and
        # the one after it, at most.
        assert len(await redis.keys("grow:applied:*")) <= 2
    finally:
        await store.close()
        await redis.aclose()


async def _present(redis: Any, key: str) -> bool:
    return bool(await redis.exists(key))


async def _is_degraded(store: Any, expected: bool) -> bool:
    return (store.degraded() is not None) is expected


async def test_a_redis_user_without_channel_rights_is_degraded_once_not_flapping(
    redis_server, logs
):
    """Redis 7's ACL users get no channels unless granted (acl-pubsub-default
    resetchannels): writes and reads work, the subscription is refused. The store is
    degraded (no replica hears another), logged once; the writer's success does not
    call it recovered each time, only for the subscriber to fail again."""
    redis = redis_server.client()
    store = await _store_without_channel(redis_server, redis, "acl")
    try:
        await store.add("spend:key:a:d", 1.0, 3600)
        await until(lambda: _total_is(redis, "acl:total:spend:key:a:d", 1.0))
        await asyncio.sleep(3.0)  # the subscriber refused a few times, writes taken
        assert "permission" in (store.degraded() or "")
        assert len(_events(logs, "state_store_degraded")) == 1
        assert _events(logs, "state_store_recovered") == []
    finally:
        await store.close()
        await redis.aclose()


async def test_a_replica_refused_its_channel_does_not_push_back_what_others_lifted(
    redis_server,
):
    """Without its channel (an ACL), a replica hears no other replica's lift: its copy
    still holds the block. Each refusal of its subscription had the writer push the
    whole copy again, which put the lifted block back in Redis for every replica."""
    from router.outcomes import BlockReason

    redis = redis_server.client()
    store = await _store_without_channel(redis_server, redis, "nochan")
    scope = "key:a@acct"
    try:
        await store.block(scope, 3600, BlockReason.QUOTA)
        await until(lambda: _present(redis, f"nochan:block:{scope}"))
        await redis.delete(f"nochan:block:{scope}")  # another replica's lift
        await asyncio.sleep(3.0)  # the subscription refused three times meanwhile
        assert await _gone(redis, f"nochan:block:{scope}")
    finally:
        await store.close()
        await redis.aclose()


async def _store_without_channel(redis_server: RedisServer, redis: Any, prefix: str) -> Any:
    """A store whose Redis user (Redis 7's ACL) has its keys but no channel."""
    user = f"user-{prefix}"
    await redis.execute_command("ACL", "SETUSER", user, "on", ">pw", f"~{prefix}:*", "+@all",
                                "resetchannels")  # fmt: skip
    return await _store(f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0", prefix)


async def _blocked_in_redis(store: Any, redis: Any, key: str, scope: str) -> None:
    """Block `scope` for its key's auth, in `store`, until Redis holds it (at `key`)."""
    from router.outcomes import BlockReason

    await store.block(scope, 3600, BlockReason.AUTH)
    await until(lambda: _present(redis, key))


async def _lifted_everywhere(store: Any, redis: Any, key: str, scope: str) -> None:
    """Until Redis no longer holds the block at `key`; then `store`'s copy has none."""
    await until(lambda: _gone(redis, key))
    await asyncio.sleep(0.1)
    assert await _blocked(store, scope, expected=False)
