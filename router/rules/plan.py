"""Pure route choice: `plan(model, snapshot, rng)` -> the routes to try, in order.

It never awaits, reads a clock or mutates anything: the health snapshot carries
relative times, and the RNG is passed in, so a table of snapshots tests it.

Panic (Envoy's panic threshold): when no route of the model is available and some are
only out because their circuit is open, those become candidates at once, one call in
flight each, so a model whose every route opened recovers with the first request after
its upstream does, not when the open period ends.

Order: the best priority tier first (lower number = preferred), then the next tier.
Inside a tier, a weighted random order without replacement (Efraimidis & Spirakis,
"Weighted random sampling with a reservoir", 2006: sort by u ** (1 / w)), where w is
the configured weight scaled by health: rate-limit headroom left, requests in flight,
recent errors and latency relative to the tier's fastest route.

Affinity (`affinity`, a conversation key from rules/affinity.py): the best tier's first
route is instead the rendezvous winner for that key among the tier's available routes,
so a conversation stays on the key holding its prompt cache; the rest of the order is
as above. Only available routes compete, so health still comes first.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from router.outcomes import BlockReason, Headroom
from router.rules.affinity import rendezvous
from router.types import ModelSpec, Route


# Not frozen, though nothing changes it: read for a route on every request (a frozen
# dataclass's __init__ sets each field through object.__setattr__; see failover/open_stream.py).
@dataclass(slots=True)
class RouteHealth:
    """What the policy knows about one route, relative to the moment of the snapshot."""

    blocked_for: float = 0.0  # seconds until a block (cooldown, open circuit, ...) lifts
    block_reason: BlockReason | None = None
    half_open: bool = False  # circuit was open and may take one probe now
    streak: int = 0  # failures in the breaker's window plus consecutive hintless 429s
    failures: int = 0  # transient failures in the breaker's window
    successes: int = 0  # successes in that window
    opens: int = 0  # times the circuit opened with no success since
    headroom: Headroom | None = None
    headroom_age: float = 0.0
    in_flight: int = 0
    error_rate: float = 0.0  # decaying average of failures, 0..1
    latency: float | None = None  # decaying average seconds to a response head
    last_failure: str = ""  # the last failure class this process saw on the route


HEALTHY = RouteHealth()


@dataclass(frozen=True, slots=True)
class Unavailable:
    route: Route
    reason: BlockReason
    recovers_in: float | None  # seconds; None when nothing says

    @property
    def limited(self) -> bool:
        """Rate limits lift by themselves; the other reasons mean the route is down."""
        return self.reason.limited


@dataclass(frozen=True, slots=True)
class Plan:
    routes: tuple[Route, ...]
    unavailable: tuple[Unavailable, ...]


def plan(
    model: ModelSpec,
    snapshot: Mapping[str, RouteHealth],
    rng: random.Random,
    *,
    need_tokens: int = 0,
    exclude: Collection[str] = (),
    routes: Sequence[Route] | None = None,
    panic: bool = False,
    affinity: bytes = b"",
) -> Plan:
    """`routes`: the model's routes that can serve the call (default: all of them).
    `panic`: when none is available, probe the routes whose circuit is open.
    `affinity`: the conversation's key; b"" for none."""
    tiers: dict[int, list[tuple[Route, RouteHealth]]] = {}
    unavailable: list[Unavailable] = []
    for route in model.routes if routes is None else routes:
        if route.id in exclude:
            continue
        health = snapshot.get(route.id, HEALTHY)
        blocked = unavailability(route, health, need_tokens)
        if blocked is not None:
            unavailable.append(blocked)
        else:
            tiers.setdefault(route.priority, []).append((route, health))
    if panic and not tiers:
        kept: list[Unavailable] = []
        for blocked in unavailable:
            health = snapshot.get(blocked.route.id, HEALTHY)
            if blocked.reason is BlockReason.CIRCUIT_OPEN and not health.in_flight:
                tiers.setdefault(blocked.route.priority, []).append((blocked.route, health))
            else:
                kept.append(blocked)
        unavailable = kept
    ordered: list[Route] = []
    for priority in sorted(tiers):
        tier = tiers[priority]
        if affinity and not ordered and len(tier) > 1:
            first = rendezvous(affinity, [route for route, _ in tier])
            ordered.append(first)
            tier = [(route, health) for route, health in tier if route is not first]
        ordered.extend(_weighted_order(tier, rng))
    return Plan(routes=tuple(ordered), unavailable=tuple(unavailable))


def unavailability(route: Route, health: RouteHealth, need_tokens: int) -> Unavailable | None:
    if health.blocked_for > 0:
        reason = BlockReason(health.block_reason or BlockReason.COOLDOWN)
        return Unavailable(route, reason, health.blocked_for)
    if health.half_open and health.in_flight > 0:
        # One probe at a time while a circuit is half-open.
        return Unavailable(route, BlockReason.PROBING, None)
    wait = _headroom_wait(health, need_tokens)
    if wait is not None:
        return Unavailable(route, BlockReason.HEADROOM, wait)
    return None


def _headroom_wait(health: RouteHealth, need_tokens: int) -> float | None:
    """Seconds until the provider said a spent bucket refills; None when there is room.

    The provider's reset is when the bucket is full again, so skipping until then is the
    conservative reading (provider-signals.md §2.1, §11.4). Only a wait that would cure
    it is a block: not a reset that is unknown or already past, and not a request
    needing more tokens than the key's whole limit, which is sent for the provider to
    judge (it answers "Request too large", EXCEEDS_TPM).
    """
    room = health.headroom
    if room is None:
        return None
    waits = []
    if room.remaining_requests == 0 and room.requests_reset_in is not None:
        waits.append(room.requests_reset_in - health.headroom_age)
    if (
        room.remaining_tokens is not None
        and room.remaining_tokens < max(need_tokens, 1)
        and room.tokens_reset_in is not None
        and (room.limit_tokens is None or need_tokens <= room.limit_tokens)
    ):
        waits.append(room.tokens_reset_in - health.headroom_age)
    wait = max(waits, default=0.0)
    return wait if wait > 0 else None


def health_weight(route: Route, health: RouteHealth, fastest: float | None) -> float:
    weight = route.weight
    room = health.headroom
    if room is not None:
        fractions = [
            remaining / limit
            for remaining, limit in (
                (room.remaining_requests, room.limit_requests),
                (room.remaining_tokens, room.limit_tokens),
            )
            if remaining is not None and limit
        ]
        if fractions:
            weight *= 0.2 + 0.8 * min(1.0, min(fractions))
    weight *= 1.0 - 0.8 * min(1.0, health.error_rate)
    weight /= 1 + health.in_flight
    if fastest is not None and health.latency:
        weight *= min(1.0, max(0.25, fastest / health.latency))
    if health.half_open:
        weight *= 0.1
    return max(weight, 1e-9)


def _weighted_order(candidates: list[tuple[Route, RouteHealth]], rng: random.Random) -> list[Route]:
    if len(candidates) == 1:
        return [candidates[0][0]]
    latencies = [health.latency for _, health in candidates if health.latency]
    fastest = min(latencies) if latencies else None
    keyed = [
        (rng.random() ** (1.0 / health_weight(route, health, fastest)), index, route)
        for index, (route, health) in enumerate(candidates)
    ]
    keyed.sort(reverse=True)
    return [route for _, _, route in keyed]
