"""The coarse deadline wheel, on a real event loop: never early, at most a tick late,
cancelled ones never fire, and the timer stops when nothing is pending."""

from __future__ import annotations

import asyncio
import random
import time

from router.upstream import deadlines
from router.upstream.deadlines import TICK, Deadlines

SLACK = 0.25  # scheduling noise on a busy CI machine, on top of the one-tick lateness


async def test_deadlines_fire_after_their_time_and_within_a_tick() -> None:
    loop = asyncio.get_running_loop()
    wheel = Deadlines()
    fired: dict[int, float] = {}
    start = loop.time()
    wanted = {i: start + random.Random(i).uniform(0.0, 0.3) for i in range(40)}
    for i, when in wanted.items():
        wheel.at(when, lambda i=i: fired.__setitem__(i, loop.time()))
    await asyncio.sleep(0.3 + TICK * 3)
    try:
        assert sorted(fired) == sorted(wanted)
        for i, at in fired.items():
            assert at >= wanted[i] - 0.002  # the loop clock is in whole milliseconds
            assert at - wanted[i] < TICK + SLACK
    finally:
        wheel.close()


async def test_a_cancelled_deadline_never_fires() -> None:
    wheel = Deadlines()
    fired: list[str] = []
    kept = wheel.after(0.05, lambda: fired.append("kept"))
    dropped = wheel.after(0.05, lambda: fired.append("dropped"))
    dropped.cancel()
    await asyncio.sleep(0.05 + TICK * 3)
    wheel.close()
    assert fired == ["kept"] and kept.fired and not dropped.fired
    dropped.cancel()  # cancelling twice, or after the wheel closed, is harmless


async def test_a_deadline_already_past_fires_at_the_next_tick() -> None:
    loop = asyncio.get_running_loop()
    wheel = Deadlines()
    done = asyncio.Event()
    wheel.at(loop.time() - 10, done.set)
    try:
        await asyncio.wait_for(done.wait(), TICK + SLACK)
    finally:
        wheel.close()


async def test_deadlines_due_while_the_loop_was_blocked_fire_when_it_is_free() -> None:
    wheel = Deadlines()
    fired: list[int] = []
    for i in range(5):
        wheel.after(0.01 * i, lambda i=i: fired.append(i))
    time.sleep(TICK * 20)  # noqa: ASYNC251 - blocks the loop for many ticks on purpose
    await asyncio.sleep(TICK * 3)
    wheel.close()
    assert sorted(fired) == list(range(5))


async def test_one_failing_callback_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    wheel = Deadlines()
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    try:
        wheel.after(0.02, boom)
        wheel.after(0.02, lambda: fired.append("after"))
        await asyncio.sleep(0.02 + TICK * 3)
    finally:
        wheel.close()
        loop.set_exception_handler(None)
    assert fired == ["after"]
    assert [type(e) for e in errors] == [RuntimeError]


async def test_the_timer_stops_when_idle_and_starts_again(monkeypatch) -> None:
    monkeypatch.setattr(deadlines, "_IDLE_TICKS", 3)
    wheel = Deadlines()
    wheel.after(0.0, lambda: None).cancel()
    assert wheel.running()
    await asyncio.sleep(TICK * 8)
    assert not wheel.running() and wheel.pending() == 0
    done = asyncio.Event()
    wheel.after(0.01, done.set)
    assert wheel.running()
    try:
        await asyncio.wait_for(done.wait(), TICK + SLACK)
    finally:
        wheel.close()
