"""state: {backend: memory, snapshot: PATH}: what a router learned survives its restart."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from router.config import parse_config
from router.health import snapshot
from router.health.snapshot import SnapshotStore
from router.server import bound_port, start
from router.sim import Fault
from tests.configs import preferring_a, state_scope
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state, client
from tests.integration.test_costs import config as priced

pytestmark = pytest.mark.timeout(30)


class Wall:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def router(text: str, wall: Callable[[], float]) -> AsyncIterator[str]:
    """A router that stops (and saves) when the block ends, unlike the stack's."""
    config = parse_config(text, source="routes.yaml", environ={})
    runner = await start(config, "127.0.0.1", 0, rng=random.Random(0), wall=wall)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


def _config(sim_url: str, path: Path, **sections: Any) -> str:
    return preferring_a(sim_url, state={"backend": "memory", "snapshot": str(path)}, **sections)


async def test_a_disabled_key_stays_out_and_a_cooldown_that_ran_out_is_gone(stack, tmp_path):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path, wall = tmp_path / "state.json", Wall()
    text = _config(sim_url, path)
    async with router(text, wall) as url:
        sim.inject("c", Fault.rate_limit(retry_after=30))
        with pytest.raises(openai.RateLimitError):  # c is gpt-4o-mini's only route
            await client(url).chat.completions.create(model="gpt-4o-mini", messages=HI)
        sim.inject("a", Fault.insufficient_quota())
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        _, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] == "quota"
    saved = json.loads(path.read_text())
    blocked = {state_scope(text, "key", "a"), state_scope(text, "route", "c/gpt-4o-mini")}
    assert {block[0] for block in saved["blocks"]} == blocked
    assert list(tmp_path.iterdir()) == [path]  # written whole, no temporary left

    wall.now += 60  # down for a minute: the 30 s cooldown ran out, the hour's did not
    async with router(text, wall) as url:
        routes, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] == "quota"
        assert routes["c/gpt-4o-mini"]["state"] == "available"
        assert 3400 < routes["a/gpt-4o"]["available_in_seconds"] <= 3540
        before = sim.stats["a"].requests
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        assert raw.headers["x-router-route"] == "b/gpt-4o"
        assert sim.stats["a"].requests == before


async def test_a_spent_budget_stays_spent_after_a_restart(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path, wall = tmp_path / "state.json", Wall()
    state = {"state": {"backend": "memory", "snapshot": str(path)}}
    # Two requests' worth of spend on key a, then a restart, then one more: with the
    # total kept, that third reaches the budget; a router that forgot would not know.
    probe = priced(sim_url)
    async with router(probe, wall) as url:
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        one = float(raw.headers["x-router-cost-usd"])
    budget = {"budget": {"usd_per_day": 2.5 * one}}
    text = priced(sim_url, key_a=budget).rstrip("\n") + "\n" + _yaml(state)
    async with router(text, wall) as url:
        for _ in range(2):
            await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    wall.now += 5
    async with router(text, wall) as url:
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        _, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] == "budget"


async def test_a_budget_raised_across_a_restart_brings_the_key_back_at_once(stack, tmp_path):
    """Out for its budget, then restarted on a config that raises it: in at once, as
    after a reload; restarted on the same budget: still out until the day turns."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path, wall = tmp_path / "state.json", Wall()
    state = _yaml({"state": {"backend": "memory", "snapshot": str(path)}})

    def text(usd_per_day: float) -> str:
        return priced(sim_url, key_a={"budget": {"usd_per_day": usd_per_day}}) + state

    async with router(text(5), wall) as url:  # one request costs over $5
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        _, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] == "budget"
    async with router(text(5), wall) as url:
        _, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] == "budget"
    async with router(text(1_000_000), wall) as url:
        served = sim.stats["a"].served
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        assert raw.headers["x-router-route"] == "a/gpt-4o"
        assert sim.stats["a"].served == served + 1


def _yaml(sections: dict[str, Any]) -> str:
    return yaml.safe_dump(sections, sort_keys=False)


async def test_an_unreadable_snapshot_is_reported_and_the_router_starts_empty(
    stack, tmp_path, capsys
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "saved_at": "yesterday"')  # cut short
    async with router(_config(sim_url, path), Wall()) as url:
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        assert sim.stats["a"].served == 1
    assert "state_snapshot_unreadable" in capsys.readouterr().out
    assert json.loads(path.read_text())["version"] == 1  # replaced by a good one at stop


def _nested(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)  # past the JSON parser's recursion


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(bytes(range(256)) * 4), id="not-utf-8"),
        pytest.param(lambda path: path.write_text("[1, 2, 3]"), id="a-list"),
        pytest.param(lambda path: path.write_text('"hello"'), id="a-string"),
        pytest.param(_nested, id="nested-too-deep"),
        pytest.param(lambda path: os.mkfifo(path), id="a-fifo"),  # a plain read waits for ever
        pytest.param(lambda path: path.symlink_to("/dev/zero"), id="endless"),
        pytest.param(lambda path: path.mkdir(), id="a-directory"),
    ],
)
async def test_whatever_is_at_the_snapshot_path_the_router_starts_and_serves(
    stack, tmp_path, capsys, damage
):
    """Each of these stopped the router from starting (a traceback, exit 1), hung its
    start, or read until memory ran out."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "state.json"
    damage(path)
    async with router(_config(sim_url, path), Wall()) as url:
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        assert sim.stats["a"].served == 1
    lines = capsys.readouterr().out.splitlines()
    (unreadable,) = [line for line in lines if "state_snapshot_unreadable" in line]
    assert "starting with empty state" in unreadable  # quoted or not: structlog's version


async def test_a_snapshot_that_cannot_be_written_is_said_on_readyz_and_the_gauge(
    stack, tmp_path, monkeypatch
):
    """It was only a log line every 10 s: nothing an alert or a probe could see, while
    a restart would have forgotten every block and spend."""
    monkeypatch.setattr(snapshot, "SAVE_EVERY", 0.05)
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the snapshot's directory should be")
    path = blocker / "state.json"
    async with router(_config(sim_url, path), Wall()) as url, aiohttp.ClientSession() as session:

        async def said() -> tuple[dict[str, Any], str]:
            async with session.get(f"{url}/readyz") as response:
                ready = await response.json()
                assert response.status == 200  # it serves: not a reason to leave the pool
            async with session.get(f"{url}/metrics") as response:
                page = await response.text()
            (gauge,) = re.findall(r"^llm_router_state_store_degraded (\S+)$", page, re.M)
            return ready["state_store"], gauge

        while (await said())[1] != "1.0":  # noqa: ASYNC110 - the next save's outcome
            await asyncio.sleep(0.02)
        store, _ = await said()
        assert store["backend"] == "snapshot" and store["status"] == "degraded"
        assert store["error"] == (
            "the state snapshot cannot be written: the snapshot's directory is a file"
        )
        blocker.unlink()
        blocker.mkdir()  # room again
        while (await said())[1] != "0.0":  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert (await said())[0] == {"backend": "snapshot", "status": "ok"}
    assert json.loads(path.read_text())["version"] == 1


async def test_a_hung_disk_is_reported_and_holds_no_exit(tmp_path, monkeypatch):
    """A snapshot write stuck on a hung disk left /readyz saying ok, and the exit waited
    for it for ever (an executor thread). Now the next save says the store is degraded,
    and close() gives up after CLOSE_SECONDS."""
    disk = threading.Event()  # the disk answers again when set
    real_fsync = os.fsync

    def hanging_fsync(fd: int) -> None:
        disk.wait(60)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", hanging_fsync)
    monkeypatch.setattr(snapshot, "CLOSE_SECONDS", 0.5)
    store = SnapshotStore(str(tmp_path / "state.json"), time.monotonic, every=0.1)
    store.start()
    try:
        async with asyncio.timeout(5):
            while store.degraded() is None:  # noqa: ASYNC110 (a thread's write: no event)
                await asyncio.sleep(0.05)
        assert "has not finished" in store.degraded()
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < 2
    finally:
        disk.set()


async def test_a_slow_disk_is_judged_by_each_writes_own_outcome(tmp_path, monkeypatch):
    """Writes that take longer than the interval: one that then fails was never said
    (the next save found it done and started another), and once they work again, slow
    as they are, the store is no longer degraded."""
    failing = True
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.15)  # past the save interval of 0.1 s
        if failing:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    store = SnapshotStore(str(tmp_path / "state.json"), time.monotonic, every=0.1)
    store.start()
    try:
        async with asyncio.timeout(5):
            while store.degraded() != "the state snapshot cannot be written: Input/output error":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        failing = False
        async with asyncio.timeout(5):
            while store.degraded() is not None:  # noqa: ASYNC110 (a thread's write: no event)
                await asyncio.sleep(0.02)
        assert (tmp_path / "state.json").exists()
    finally:
        await store.close()
