"""Where requests wait for rate limits to lift (failover.max_wait), in arrival order.

One line per requested model, ordered by arrival number. A waiter sleeps until the
earliest recovery, then until every earlier waiter of its model has left the line; it
leaves when its next round has sent its first attempt (or ended), which lets the next
one go. At most `limit` requests wait at once, over all models (`WaitRoom`): one room
for the process, whose limit a reload sets, so the requests still waiting on the config
before count against the new one, and queue ahead of the requests after it.
One request's waits, over all its rounds, stay within its model's max_wait and its
deadline (`Patience`).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Gauge

from router.errors import NoCapacity

_MIN_WAIT = 0.01  # a recovery due now still sleeps this long: no busy loop


@dataclass(slots=True)
class Ticket:
    """A request's place in its model's line; `seq` is its arrival number."""

    seq: int
    model: str
    turn: asyncio.Future[None] | None = field(default=None, compare=False)
    left: bool = field(default=False, compare=False)


class WaitRoom:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # failover.max_waiting of the config serving now
        self._count = 0
        self._lines: dict[str, list[Ticket]] = {}
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return self._count

    def arrival(self) -> int:
        return next(self._arrivals)

    def admits(self, bound: float) -> bool:
        """Whether a wait of up to `bound` seconds may begin: room is left, and time."""
        return self._count < self.limit and bound > 0

    def busy(self, model: str) -> bool:
        """Whether requests for `model` are waiting: a newcomer queues behind them."""
        return bool(self._lines.get(model))

    async def hold(self, model: str, seq: int, seconds: float, bound: float) -> Ticket | None:
        """Sleep `seconds`, then until the earlier waiters of `model` have left: the
        ticket at the head of the line, or None when the room is full or that took
        longer than `bound` seconds (the request then answers 429 as without waiting)."""
        if not self.admits(bound):
            return None
        line = self._lines.setdefault(model, [])
        ticket = Ticket(seq, model)
        bisect.insort(line, ticket, key=_seq)
        self._count += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(bound):
                if seconds > 0:
                    await asyncio.sleep(seconds)
                while line[0] is not ticket:
                    ticket.turn = loop.create_future()
                    await ticket.turn
        except TimeoutError:
            self.leave(ticket)
            return None
        except BaseException:  # the client left (handler cancelled): out of the line
            self.leave(ticket)
            raise
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Out of the line; the next waiter goes if it was the head."""
        if ticket.left:
            return
        ticket.left = True
        self._count -= 1
        line = self._lines[ticket.model]
        head = line[0] is ticket
        line.remove(ticket)
        if not line:
            del self._lines[ticket.model]
        elif head:
            turn = line[0].turn
            if turn is not None and not turn.done():
                turn.set_result(None)


class Patience:
    """One request's waits for capacity: in its model's line, within `max_wait` seconds
    over all its rounds and within its deadline. Made only for a request that waits."""

    __slots__ = ("_clock", "_deadline", "_gauge", "_max_wait", "_model", "_room", "_seq", "waited")

    def __init__(
        self,
        room: WaitRoom,
        model: str,
        max_wait: float,
        deadline: float,
        clock: Callable[[], float],
        gauge: Gauge,
    ) -> None:
        self._room = room
        self._model = model
        self._max_wait = max_wait
        self._deadline = deadline
        self._clock = clock  # the loop's
        self._gauge = gauge  # requests waiting now, of this model
        self._seq = -1  # the arrival number, taken at the first wait: kept for every round
        self.waited = 0.0  # seconds, a wait the client left included

    async def queue(self) -> Ticket | None:
        """Behind the earlier waiters of the model, not past them: the head of the line,
        or None when the room is full or the line took too long (go on without it)."""
        return await self._hold(0.0, min(self._max_wait, self._deadline - self._clock()))

    async def wait_out(self, refusal: NoCapacity) -> Ticket:
        """Sleep until the earliest recovery `refusal` names, then until its turn: the
        head of the line. Raises `refusal` when that is longer than the request may still
        wait, or the room is full, or the line took too long."""
        assert refusal.retry_after is not None
        wait = refusal.retry_after if refusal.retry_after > _MIN_WAIT else _MIN_WAIT
        now = self._clock()
        bound = min(self._max_wait - self.waited, self._deadline - now)
        if wait > bound:
            raise refusal  # longer than the request may wait: 429 at once
        ticket = await self._hold(wait, bound)
        if ticket is None:
            refusal.retry_after = max(0.0, wait - (self._clock() - now))
            raise refusal
        return ticket

    async def _hold(self, seconds: float, bound: float) -> Ticket | None:
        if not self._room.admits(bound):
            return None  # refused at once: never held, so nothing is counted
        if self._seq < 0:
            self._seq = self._room.arrival()
        since = self._clock()
        self._gauge.inc()
        try:
            return await self._room.hold(self._model, self._seq, seconds, bound)
        finally:
            self._gauge.dec()
            self.waited += self._clock() - since  # a cancelled wait (the client left) too


def _seq(ticket: Ticket) -> int:
    return ticket.seq


__all__ = ["Patience", "Ticket", "WaitRoom"]
