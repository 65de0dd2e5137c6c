"""Deadlines on a real event loop: never early, on time within scheduling noise,
cancelled ones never fire, and none is left pending."""

from __future__ import annotations

import asyncio
import random
import time

from router.upstream.deadlines import Deadlines

SLACK = 0.25  # scheduling noise on a busy CI machine
TICK = 0.02  # a little time for the loop to run a callback that is due


async def test_deadlines_fire_after_their_time_and_on_time() -> None:
    loop = asyncio.get_running_loop()
    timers = Deadlines()
    fired: dict[int, float] = {}
    start = loop.time()
    wanted = {i: start + random.Random(i).uniform(0.0, 0.3) for i in range(40)}
    for i, when in wanted.items():
        timers.at(when, lambda i=i: fired.__setitem__(i, loop.time()))
    await asyncio.sleep(0.3 + TICK * 3)
    try:
        assert sorted(fired) == sorted(wanted)
        for i, at in fired.items():
            assert at >= wanted[i] - 0.002  # the loop clock is in whole milliseconds
            assert at - wanted[i] < TICK + SLACK
    finally:
        timers.close()


async def test_a_cancelled_deadline_never_fires() -> None:
    timers = Deadlines()
    fired: list[str] = []
    kept = timers.after(0.05, lambda: fired.append("kept"))
    dropped = timers.after(0.05, lambda: fired.append("dropped"))
    dropped.cancel()
    await asyncio.sleep(0.05 + TICK * 3)
    timers.close()
    assert fired == ["kept"] and kept.fired and not dropped.fired
    dropped.cancel()  # cancelling twice, or after the timers closed, is harmless


async def test_a_deadline_already_past_fires_at_once() -> None:
    loop = asyncio.get_running_loop()
    timers = Deadlines()
    done = asyncio.Event()
    timers.at(loop.time() - 10, done.set)
    try:
        await asyncio.wait_for(done.wait(), TICK + SLACK)
    finally:
        timers.close()


async def test_deadlines_due_while_the_loop_was_blocked_fire_when_it_is_free() -> None:
    timers = Deadlines()
    fired: list[int] = []
    for i in range(5):
        timers.after(0.01 * i, lambda i=i: fired.append(i))
    time.sleep(TICK * 20)  # noqa: ASYNC251 - blocks the loop for many ticks on purpose
    await asyncio.sleep(TICK * 3)
    timers.close()
    assert sorted(fired) == list(range(5))


async def test_one_failing_callback_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    timers = Deadlines()
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    try:
        timers.after(0.02, boom)
        timers.after(0.02, lambda: fired.append("after"))
        await asyncio.sleep(0.02 + TICK * 3)
    finally:
        timers.close()
        loop.set_exception_handler(None)
    assert fired == ["after"]
    assert [type(e) for e in errors] == [RuntimeError]


async def test_none_is_pending_once_fired_or_cancelled_and_close_cancels_the_rest() -> None:
    timers = Deadlines()
    fired: list[str] = []
    timers.after(0.0, lambda: fired.append("soon"))
    timers.after(0.05, lambda: fired.append("cancelled")).cancel()
    timers.after(30, lambda: fired.append("closed"))
    assert timers.pending() == 2
    await asyncio.sleep(TICK * 3)
    assert timers.pending() == 1 and fired == ["soon"]
    timers.close()
    assert timers.pending() == 0
