"""What comes into a replica's copy from Redis: the other replicas' messages, and the
state a reconciliation reads (redis_store.py sends and schedules; this takes in).

Only values a router writes are taken (read_back.py). A read sent before a lift and
answered after it does not put the lifted block back: each replica remembers its lifts,
and those it hears of, for LIFT_MEMORY seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import structlog

from router.health import read_back
from router.health.memory import MemoryStore
from router.outcomes import BlockReason

log = structlog.get_logger("router.state")

CIRCUIT_MEMORY = 600.0  # how long a replica remembers a circuit another one opened
LIFT_MEMORY = 60.0  # how long it remembers a lift, against a read that predates it


def _seconds(ms: Any) -> float:
    """A shared message's or key's duration in ms, as seconds (read_back.seconds_left)."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        raise ValueError(f"not a duration: {ms!r}")
    return read_back.seconds_left(ms / 1000)


class Incoming:
    def __init__(self, local: MemoryStore, node: str, clock: Callable[[], float]) -> None:
        self._local = local
        self._node = node  # this replica's: its own messages come back to it
        self._clock = clock
        # scope -> when a block on it was last lifted, here or by another replica
        self.lifted: dict[str, float] = {}

    def note_lift(self, scope: str) -> None:
        """A block on `scope` was lifted (here, or told by another replica) now."""
        self.lifted[scope] = self._clock()

    def read_begins(self) -> float:
        """A reconciliation read starts: its time, for `entry`."""
        started = self._clock()
        lifted = self.lifted
        for scope in [scope for scope, at in lifted.items() if at < started - LIFT_MEMORY]:
            del lifted[scope]
        return started

    async def entry(self, kind: str, name: str, value: Any, ms: Any, started: float) -> None:
        """One key a read started at `started` found: its value and PTTL, as Redis
        answered them (an error answer, a key of another type, is no value)."""
        if not isinstance(value, bytes) or not isinstance(ms, int) or ms <= 0:
            return
        try:
            seconds = _seconds(ms)
            if kind == "block":
                if self.lifted.get(name, -math.inf) >= started:
                    return  # read before a lift, answered after it: the lift is newer
                await self._local.block(name, seconds, BlockReason(value.decode()))
            elif kind == "headroom":
                room = read_back.headroom(json.loads(value))  # JSONDecodeError: ValueError
                await self._local.put_headroom(name, room, seconds)
            else:
                self._local.set_total(name, read_back.amount(value), seconds, at_least=True)
        except ValueError:
            return

    async def message(self, data: bytes) -> None:
        """A message another replica published: applied to the copy; one that is not
        what a replica writes is ignored, with a warning."""
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise TypeError(f"a message is a JSON object, not {type(message).__name__}")
            if message.get("from") == self._node:
                return
            op = message["op"]
            local = self._local
            if op == "block":
                reason = BlockReason(message["reason"])
                scope = message["scope"]
                if reason is BlockReason.CIRCUIT_OPEN and await local.block(
                    scope, _seconds(message["ms"]), reason
                ):
                    # Opened elsewhere: half-open here too once it lapses, so only one
                    # replica's probe (announced as a PROBING block) tries it first.
                    await local.count(scope, "opens", ttl=CIRCUIT_MEMORY)
                else:
                    await local.block(scope, _seconds(message["ms"]), reason)
            elif op == "lift":
                reason = BlockReason(message["reason"])
                await local.lift(message["scope"], reason)
                self.note_lift(message["scope"])
                if reason in (BlockReason.PROBING, BlockReason.CIRCUIT_OPEN):
                    # A probe elsewhere succeeded: the circuit is closed here too.
                    await local.reset(message["scope"], ("opens",))
            elif op == "headroom":
                headroom = read_back.headroom(json.loads(message["value"]))
                await local.put_headroom(message["scope"], headroom, _seconds(message["ms"]))
            elif op == "spend":
                local.set_total(
                    message["total"],
                    read_back.amount(message["value"]),
                    _seconds(message["ms"]),
                    at_least=True,
                )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("state_message_ignored", error=f"{type(exc).__name__}: {exc}")
