"""Where requests wait for rate limits to lift (failover.max_wait), in arrival order.

One line per requested model, ordered by arrival number. A waiter sleeps until the
earliest recovery, then until every earlier waiter of its model has left the line; it
leaves when its next round has sent its first attempt (or ended), which lets the next
one go. At most `limit` requests wait at once, over all models.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from dataclasses import dataclass, field


@dataclass(slots=True)
class Ticket:
    """A request's place in its model's line; `seq` is its arrival number."""

    seq: int
    model: str
    turn: asyncio.Future[None] | None = field(default=None, compare=False)
    left: bool = field(default=False, compare=False)


class WaitRoom:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._lines: dict[str, list[Ticket]] = {}
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return self._count

    def arrival(self) -> int:
        return next(self._arrivals)

    def busy(self, model: str) -> bool:
        """Whether requests for `model` are waiting: a newcomer queues behind them."""
        return bool(self._lines.get(model))

    async def hold(self, model: str, seq: int, seconds: float, bound: float) -> Ticket | None:
        """Sleep `seconds`, then until the earlier waiters of `model` have left: the
        ticket at the head of the line, or None when the room is full or that took
        longer than `bound` seconds (the request then answers 429 as without waiting)."""
        if self._count >= self._limit or bound <= 0:
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


def _seq(ticket: Ticket) -> int:
    return ticket.seq


__all__ = ["Ticket", "WaitRoom"]
