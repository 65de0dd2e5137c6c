"""The async interface every state backend implements.

Shared facts only: blocks (cooldowns, open circuits, disabled keys), the circuit
breaker's counters and the last reported headroom. Everything is expressed as *seconds from now*,
never as absolute times, so that a Redis backend can keep blocks as TTLs: hosts' clocks
differ, and a TTL means the same on every replica (style.md §4 "One owner of health state").
Per-process facts (in-flight requests, latency) stay in `health/tracker.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from router.outcomes import BlockReason, Headroom


@dataclass(frozen=True, slots=True)
class Block:
    remaining: float  # seconds until the scope may be used again
    reason: BlockReason


# Not frozen, though nothing changes it: a route's own state is read on every request
# (a frozen dataclass's __init__ sets each field through object.__setattr__).
@dataclass(slots=True)
class ScopeState:
    block: Block | None = None
    failures: int = 0  # transient failures in the breaker's window
    successes: int = 0  # successes in the same window (counted only once it has failures)
    opens: int = 0  # times the circuit opened with no success since (its backoff)
    rate_limits: int = 0  # consecutive 429s without a hint (exponential backoff)
    headroom: Headroom | None = None
    headroom_age: float = 0.0  # seconds since the headroom was reported


EMPTY = ScopeState()


class StateStore(Protocol):
    async def read(self, scopes: Sequence[str]) -> dict[str, ScopeState]:
        """State of each scope that has any; absent scopes are EMPTY."""
        ...

    def peek(self, scope: str) -> ScopeState | None:
        """One scope's state as this process's copy has it now, without waiting (every
        backend keeps a local copy); None when it has none. What route choice reads."""
        ...

    async def block(self, scope: str, seconds: float, reason: BlockReason) -> bool:
        """Block `scope` for at least `seconds`. True when it was not blocked before."""
        ...

    async def lift(self, scope: str, reason: BlockReason) -> None:
        """End the scope's block now, if it is one for `reason`."""
        ...

    async def count(self, scope: str, counter: str, ttl: float, *, window: bool = False) -> int:
        """Increment `counter` (a ScopeState counter's name) of scope; return the new value.

        It lapses `ttl` seconds after its last increment, or with `window`, after its
        first one (a fixed window: Redis `INCR` then `EXPIRE ... NX`).
        """
        ...

    async def reset(self, scope: str, counters: Sequence[str] = ()) -> None:
        """Zero the named counters of scope; every counter when none is named."""
        ...

    async def put_headroom(self, scope: str, headroom: Headroom, ttl: float) -> None: ...

    def scopes(self) -> Collection[str]:
        """Every scope this copy holds, or has held, any state for: what a /metrics
        scrape refreshes (the other routes have said nothing yet)."""
        ...

    async def add(self, counter: str, amount: float, ttl: float) -> float:
        """Add to a running total (spend per period); return the new total."""
        ...

    def forget(self, scopes: Sequence[str], totals: Sequence[str] = ()) -> None:
        """Drop this process's state for `scopes` and the running totals whose names
        begin with one of `totals` (routes, keys and models a reload removed). A shared
        backend keeps its shared entries: other replicas may still use them, and they
        expire on their own."""
        ...

    def announce_probe(self, scope: str, seconds: float) -> None:
        """A probe of `scope` (a half-open circuit) is under way here: replicas that
        share this state leave the scope alone for `seconds` (a lease), or until the
        probe's success lifts it. Nothing to do for a store of one process."""
        ...

    def start(self) -> None:
        """Begin any background work (a shared backend's sync); called on the loop."""
        ...

    async def loaded(self) -> None:
        """Returns once the state the store starts from is in: at once for a store of
        one process (a snapshot is read by start()); for a shared backend, after its
        first whole read of what the other replicas left (while it is away, not yet)."""
        ...

    def degraded(self) -> str | None:
        """Why the store serves from a local copy only (a shared backend that is away);
        None while it works as configured."""
        ...

    async def close(self) -> None: ...
