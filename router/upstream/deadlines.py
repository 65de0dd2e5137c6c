"""Coarse deadlines for many waits at once: one loop timer ticking for all of them.

Every upstream attempt has two deadlines (the response head, then the body's reads).
An event-loop timer per deadline costs about 2.3 us to start and cancel on uvloop,
`asyncio.timeout` about 4.7 us; nearly all of them are cancelled unfired. Here a
deadline is an entry in the bucket of its tick (a hashed timing wheel, as in Varghese
& Lauck, "Hashed and hierarchical timing wheels", 1987, and Netty's HashedWheelTimer),
added and removed in well under a microsecond, and one timer per tick fires the
buckets that are due. A deadline fires at most one tick late, never early.

The timer runs while deadlines are pending and stops after a second with none.

Tuned: every choice here was measured with `bench/cpu.py` (README "Performance").
Change it with a before/after figure.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

TICK = 0.02  # seconds: how late a deadline may fire
_IDLE_TICKS = 50  # ticks with nothing pending before the timer stops


class Deadline:
    """One pending deadline; `cancel()` it when the wait is over."""

    __slots__ = ("_owner", "_slot", "expire", "fired")

    def __init__(self, owner: Deadlines, slot: int, expire: Callable[[], None]) -> None:
        self._owner = owner
        self._slot = slot
        self.expire = expire
        self.fired = False

    def cancel(self) -> None:
        self._owner._remove(self)


class Deadlines:
    """The deadlines of one event loop, on its clock (loop.time())."""

    __slots__ = ("_done_upto", "_handle", "_idle", "_loop", "_slots")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, dict[Deadline, None]] = {}  # tick number -> its deadlines
        self._handle: asyncio.TimerHandle | None = None
        self._done_upto = 0  # the last tick whose deadlines have fired
        self._idle = 0

    def at(self, when: float, expire: Callable[[], None]) -> Deadline:
        """Call `expire()` soon after `when` (loop time) has passed, unless cancelled."""
        if self._handle is None:
            self._start()
        # The first tick at or after `when`; one already past fires at the next tick.
        slot = max(math.ceil(when / TICK), self._done_upto + 1)
        deadline = Deadline(self, slot, expire)
        bucket = self._slots.get(slot)
        if bucket is None:
            bucket = self._slots[slot] = {}
        bucket[deadline] = None
        return deadline

    def after(self, seconds: float, expire: Callable[[], None]) -> Deadline:
        loop = self._loop or asyncio.get_running_loop()
        return self.at(loop.time() + max(seconds, 0.0), expire)

    def pending(self) -> int:
        """For tests: how many deadlines are set."""
        return sum(len(bucket) for bucket in self._slots.values())

    def running(self) -> bool:
        """For tests: whether the tick is scheduled."""
        return self._handle is not None

    def close(self) -> None:
        """Stop the timer and forget every deadline (at shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()

    def _remove(self, deadline: Deadline) -> None:
        bucket = self._slots.get(deadline._slot)
        if bucket is not None:
            bucket.pop(deadline, None)
            if not bucket:
                del self._slots[deadline._slot]

    def _start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._done_upto = now_slot = self._slot_now(loop)
        self._idle = 0
        self._handle = loop.call_at((now_slot + 1) * TICK, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now_slot = self._slot_now(loop)
        if self._slots:
            self._idle = 0
            self._fire(now_slot)
        else:
            self._idle += 1
        self._done_upto = max(self._done_upto, now_slot)
        if self._idle >= _IDLE_TICKS:
            self._handle = None
            return
        self._handle = loop.call_at((self._done_upto + 1) * TICK, self._tick)

    @staticmethod
    def _slot_now(loop: asyncio.AbstractEventLoop) -> int:
        # The timer may run a hair before its time (float division, a loop clock in
        # whole milliseconds): the tick it was set for counts as reached.
        return math.floor(loop.time() / TICK + 1e-6)

    def _fire(self, now_slot: int) -> None:
        slots = self._slots
        if now_slot - self._done_upto <= len(slots):
            due = [s for s in range(self._done_upto + 1, now_slot + 1) if s in slots]
        else:  # the loop was busy for many ticks: look at the buckets instead
            due = sorted(s for s in slots if s <= now_slot)
        loop = self._loop
        assert loop is not None
        for slot in due:
            for deadline in slots.pop(slot):
                # Called here, not scheduled: a wait that ends before a scheduled call ran
                # would still be cancelled by it, later, at some other await.
                deadline.fired = True
                try:
                    deadline.expire()
                except Exception as exc:  # one failing callback must not stop the others
                    loop.call_exception_handler(
                        {"message": "deadline callback failed", "exception": exc}
                    )
