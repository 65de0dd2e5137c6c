"""In-process state: the default backend for a single router process."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from router.health.store import EMPTY, Block, ScopeState
from router.outcomes import BlockReason, Headroom


@dataclass(slots=True)
class _Entry:
    blocked_until: float = 0.0
    block_reason: BlockReason = BlockReason.COOLDOWN  # read only while blocked
    counters: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (n, expires)
    headroom: Headroom | None = None
    headroom_at: float = 0.0
    headroom_until: float = 0.0


@dataclass(frozen=True, slots=True)
class LiveState:
    blocks: list[tuple[str, float, BlockReason]]  # scope, seconds left, reason
    headroom: list[tuple[str, Headroom, float]]  # scope, headroom, seconds left
    totals: list[tuple[str, float, float]]  # counter, total, seconds left


class MemoryStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._totals: dict[str, tuple[float, float]] = {}  # counter -> (total, expires)

    def _entry(self, scope: str) -> _Entry:
        entry = self._entries.get(scope)
        if entry is None:
            entry = self._entries[scope] = _Entry()
        return entry

    async def read(self, scopes: Sequence[str]) -> dict[str, ScopeState]:
        states: dict[str, ScopeState] = {}
        for scope in scopes:
            state = self.peek(scope)
            if state is not None:
                states[scope] = state
        return states

    def peek(self, scope: str) -> ScopeState | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        now = self._clock()
        block = None
        if entry.blocked_until > now:
            block = Block(entry.blocked_until - now, entry.block_reason)
        headroom = entry.headroom if entry.headroom_until > now else None
        counters = entry.counters
        if block is None and headroom is None and not counters:
            return EMPTY
        age = now - entry.headroom_at if headroom else 0.0
        if not counters:  # a route's usual state: a headroom report, no failures
            return ScopeState(block, 0, 0, 0, 0, headroom, age)
        # Positional, in the fields' order: keywords would reach the class as a dict.
        return ScopeState(
            block,
            _live(counters.get("failures"), now),
            _live(counters.get("successes"), now),
            _live(counters.get("opens"), now),
            _live(counters.get("rate_limits"), now),
            headroom,
            age,
        )

    async def block(self, scope: str, seconds: float, reason: BlockReason) -> bool:
        now = self._clock()
        entry = self._entry(scope)
        was_blocked = entry.blocked_until > now
        until = now + seconds
        if not was_blocked or until > entry.blocked_until:
            entry.blocked_until, entry.block_reason = until, reason
        return not was_blocked

    async def lift(self, scope: str, reason: BlockReason) -> None:
        entry = self._entries.get(scope)
        if entry is not None and entry.block_reason is reason:
            entry.blocked_until = 0.0

    async def count(self, scope: str, counter: str, ttl: float, *, window: bool = False) -> int:
        now = self._clock()
        entry = self._entry(scope)
        current = entry.counters.get(counter)
        value = _live(current, now) + 1
        expires = current[1] if window and value > 1 and current is not None else now + ttl
        entry.counters[counter] = (value, expires)
        return value

    async def reset(self, scope: str, counters: Sequence[str] = ()) -> None:
        entry = self._entries.get(scope)
        if entry is None:
            return
        if not counters:
            entry.counters.clear()
        for counter in counters:
            entry.counters.pop(counter, None)

    async def put_headroom(self, scope: str, headroom: Headroom, ttl: float) -> None:
        now = self._clock()
        entry = self._entry(scope)
        entry.headroom, entry.headroom_at, entry.headroom_until = headroom, now, now + ttl

    def scopes(self) -> Collection[str]:
        return self._entries.keys()  # entries are kept once made

    async def add(self, counter: str, amount: float, ttl: float) -> float:
        now = self._clock()
        total, expires = self._totals.get(counter, (0.0, 0.0))
        if expires <= now:
            total = 0.0
            if counter not in self._totals:
                self._drop_ended(now)
        total += amount
        self._totals[counter] = (total, now + ttl)
        return total

    def set_total(self, counter: str, total: float, ttl: float, *, at_least: bool = False) -> None:
        """Set a running total from a shared store's authoritative sum; `at_least`: only
        ever raise it (an answer that may predate increments this copy already has)."""
        now = self._clock()
        current, expires = self._totals.get(counter, (0.0, 0.0))
        if counter not in self._totals:
            self._drop_ended(now)
        if not at_least or expires <= now or current < total:
            self._totals[counter] = (total, now + ttl)

    def _drop_ended(self, now: float) -> None:
        """Totals of periods that have ended (a day's, once it turned): each new period
        makes a new name, so without this a process kept every day's total it saw."""
        for name in [name for name, (_, expires) in self._totals.items() if expires <= now]:
            del self._totals[name]

    def live(self) -> LiveState:
        """What has not expired: blocks, headroom and totals, with seconds left on each
        (for a shared store to push back after an outage, or a snapshot to save)."""
        now = self._clock()
        blocks = []
        headroom = []
        for scope, entry in self._entries.items():
            if entry.blocked_until > now:
                blocks.append((scope, entry.blocked_until - now, entry.block_reason))
            if entry.headroom is not None and entry.headroom_until > now:
                headroom.append((scope, entry.headroom, entry.headroom_until - now))
        totals = [(name, total, expires - now) for name, (total, expires) in self._totals.items()
                  if expires > now]  # fmt: skip
        return LiveState(blocks, headroom, totals)

    def forget(self, scopes: Sequence[str], totals: Sequence[str] = ()) -> None:
        for scope in scopes:
            self._entries.pop(scope, None)
        if totals:
            prefixes = tuple(totals)
            for name in [name for name in self._totals if name.startswith(prefixes)]:
                del self._totals[name]

    def restore(self, state: LiveState) -> None:
        """Take in what a snapshot held (seconds left as of now); the later block and
        the larger total win over what is here already."""
        now = self._clock()
        for scope, left, reason in state.blocks:
            entry = self._entry(scope)
            if now + left > entry.blocked_until:
                entry.blocked_until, entry.block_reason = now + left, reason
        for scope, headroom, left in state.headroom:
            entry = self._entry(scope)
            entry.headroom, entry.headroom_at, entry.headroom_until = headroom, now, now + left
        for name, total, left in state.totals:
            self.set_total(name, total, left, at_least=True)

    def announce_probe(self, scope: str, seconds: float) -> None:
        return None  # no other replica to tell

    def start(self) -> None:
        return None  # nothing runs in the background

    async def loaded(self) -> None:
        return None  # all there is, it has

    def degraded(self) -> str | None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._totals.clear()


def _live(counter: tuple[int, float] | None, now: float) -> int:
    if counter is None or counter[1] <= now:
        return 0
    return counter[0]
