"""HealthTracker: the only writer of route and key state.

`record()` turns one attempt's verdict into state: cooldowns for rate limits, a long
block of the whole key for quota and credential failures, a circuit breaker for
repeated transient failures. `view()` (route choice, lazily) and `snapshot()` (status
pages, every route) are what everything else reads. Shared facts
go through the StateStore (so replicas agree); in-flight counts and latency averages
are this process's own.

Circuit breaker (Envoy's outlier detection and resilience4j's breaker, combined): the
circuit opens when, within `breaker_window` seconds of a route's first transient
failure, at least `breaker_failures` calls failed and they were at least
`breaker_failure_rate` of the calls (a minimum volume, then a ratio: a busy route's
sporadic errors do not open it, a burst of 3 in 12 ms does not either). It opens for
`breaker_open` seconds, short, because most outages are. When that lapses the route is
half-open: the policy lets one probe through. Success closes it; failure opens it again
for twice as long, up to `breaker_open_max` (Envoy's ejection time growing with each
ejection). The bookkeeping is per route and O(1): a success costs no store call unless
the route has failed within its window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from router.health.scopes import account_scope, key_scope, route_scope
from router.health.store import EMPTY, Block, StateStore
from router.outcomes import BlockReason, Headroom, Verdict
from router.outcomes import FailureClass as F
from router.rules.failures import ACTIONS, Penalty
from router.rules.plan import HEALTHY, RouteHealth
from router.types import FailoverSettings, Key, Route

# Module constants, not enum class attributes, on the request path: see router/outcomes.py.
_OK = F.OK
_NONE, _COOLDOWN, _CIRCUIT = Penalty.NONE, Penalty.COOLDOWN, Penalty.CIRCUIT
_KEY_OUT, _ROUTE_OUT = Penalty.KEY_OUT, Penalty.ROUTE_OUT
_BUDGET = BlockReason.BUDGET

log = structlog.get_logger("router.health")

_EWMA = 0.2  # weight of the newest observation in the decaying averages
# How long other replicas sharing the state leave a half-open route to this replica's
# probe; a probe that takes longer (a long stream) may be joined by one more.
PROBE_LEASE = 10.0
# Route sets indexed for views (the config's, per model and operation: a bound that a
# config never reaches); past it, a set is indexed for the call and not kept.
_MAX_ROUTE_SETS = 4096


@dataclass(slots=True)
class _Local:
    in_flight: int = 0
    error_rate: float = 0.0
    latency: float | None = None
    last_failure: str = ""


class HealthTracker:
    def __init__(
        self, store: StateStore, settings: FailoverSettings, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._local: dict[str, _Local] = {}
        self._index: dict[int, tuple[tuple[Route, ...], dict[str, tuple[Route, str, str]]]] = {}
        # Routes a reload removed (or moved to another account), whose shared state it
        # forgot: a request of this config still running on one records nothing more.
        self._retired: frozenset[str] = frozenset()

    def retire(self, route_ids: Iterable[str]) -> None:
        """A reload removed these routes, or moved their key to another account, and
        forgot their state: a request begun before it that fails on one afterwards must
        not write it back (a cooldown or a disabled key that came back with the route)."""
        self._retired = self._retired | frozenset(route_ids)

    def successor(self, settings: FailoverSettings, keep: Iterable[str]) -> HealthTracker:
        """A tracker for a reloaded config: the same store, and this process's own state
        (in-flight counts, averages) for the route ids in `keep`, shared, so requests
        still running on this tracker count on the same objects."""
        tracker = HealthTracker(self._store, settings, self._clock)
        for route_id in keep:
            local = self._local.get(route_id)
            if local is not None:
                tracker._local[route_id] = local
        return tracker

    def _index_of(self, routes: tuple[Route, ...]) -> dict[str, tuple[Route, str, str]]:
        # Keyed by identity: route sets are the config's own tuples, long-lived (a view is
        # only asked of those), and
        # hashing a tuple of a thousand routes on every request would cost O(routes).
        # The entry holds the tuple, so its id is not reused while the entry lives.
        cached = self._index.get(id(routes))
        if cached is not None and cached[0] is routes:
            return cached[1]
        index = {route.id: (route, route_scope(route), key_scope(route)) for route in routes}
        if len(self._index) < _MAX_ROUTE_SETS:
            self._index[id(routes)] = (routes, index)
        return index

    def view(self, routes: tuple[Route, ...]) -> HealthView:
        """The health of `routes`, each read when first asked for: what route choice
        reads, so a request pays for the routes it looks at, not for every route."""
        return HealthView(self, self._index_of(routes))

    async def snapshot(self, routes: Iterable[Route]) -> dict[str, RouteHealth]:
        """The health of every one of `routes` (status pages, readiness)."""
        return {
            route.id: self._health(route, route_scope(route), key_scope(route)) for route in routes
        }

    def _health(self, route: Route, own_scope: str, key_scope_: str) -> RouteHealth:
        store = self._store
        own = store.peek(own_scope) or EMPTY
        key = store.peek(key_scope_) or EMPTY
        local = self._local.get(route.id)
        if own is EMPTY and key is EMPTY and local is None:
            return HEALTHY
        block, key_block = own.block, key.block
        if key_block is not None and key_block.reason is _BUDGET and route.key.budget is None:
            # A budget block outlives a budget since removed: this replica, started or
            # reloaded on a config without it, reads it back from the shared store.
            key_block = None
        if key_block is not None and (block is None or key_block.remaining > block.remaining):
            block = key_block
        blocked_for, block_reason = (block.remaining, block.reason) if block else (0.0, None)
        half_open = block is None and own.opens > 0
        streak = own.failures + own.rate_limits
        if local is not None:
            in_flight, error_rate = local.in_flight, local.error_rate
            latency, last_failure = local.latency, local.last_failure
        else:
            in_flight, error_rate, latency, last_failure = 0, 0.0, None, ""
        # Positional, in the fields' order: keywords would reach the class as a dict
        # (CPython 3.11), more than doubling what this costs on every request.
        return RouteHealth(
            blocked_for, block_reason, half_open, streak, own.failures, own.successes,
            own.opens, own.headroom, own.headroom_age, in_flight, error_rate, latency,
            last_failure,
        )  # fmt: skip

    def begin(self, route: Route, prior: RouteHealth | None = None) -> None:
        self._local_for(route).in_flight += 1
        if prior is not None and prior.half_open:
            # This call is the probe: other replicas sharing the state hold off meanwhile.
            self._store.announce_probe(route_scope(route), PROBE_LEASE)

    def end(self, route: Route) -> None:
        self._local_for(route).in_flight -= 1

    async def record(
        self,
        route: Route,
        verdict: Verdict,
        *,
        prior: RouteHealth,
        seconds: float,
        headroom: Headroom | None = None,
    ) -> None:
        """Apply one attempt's outcome. `prior` is the route's health when it was chosen."""
        if route.id in self._retired:
            return  # retire(): its state went with the config
        failure = verdict.failure
        action = ACTIONS[failure]
        local = self._local_for(route)
        local.error_rate += _EWMA * ((1.0 if action.counts_as_error else 0.0) - local.error_rate)
        if failure is F.OK:
            local.latency = (
                seconds
                if local.latency is None
                else (local.latency + _EWMA * (seconds - local.latency))
            )
        else:
            local.last_failure = failure.value
        if headroom is not None:
            if failure is F.RATE_LIMITED and verdict.retry_after is not None:
                # A 429 that says when to come back is more precise than its headroom's
                # resets, which are when the bucket is full again (§2.1, §4.3).
                headroom = _capped(headroom, verdict.retry_after)
            await self._store.put_headroom(route_scope(route), headroom, _headroom_ttl(headroom))

        penalty = action.penalty
        if penalty is _NONE:
            if failure is _OK:
                await self._on_success(route, prior)
        elif penalty is _COOLDOWN:
            await self._cool_down(route, verdict)
        elif penalty is _KEY_OUT:
            assert action.out_for is not None  # Action checks it
            seconds = max(self._settings.key_disable, verdict.retry_after or 0.0)
            await self.disable_key(route.key, seconds, action.out_for, verdict.message)
        elif penalty is _ROUTE_OUT:
            assert action.out_for is not None
            await self._block_route(route, self._settings.key_disable, action.out_for, verdict)
        elif penalty is _CIRCUIT:
            await self._count_failure(route, verdict, prior)

    def _local_for(self, route: Route) -> _Local:
        local = self._local.get(route.id)
        if local is None:
            local = self._local[route.id] = _Local()
        return local

    async def _on_success(self, route: Route, prior: RouteHealth) -> None:
        scope = route_scope(route)
        if prior.opens:
            # A probe got through (half-open, or every route was open): closed.
            log.info("circuit_closed", route=route.id)
            await self._store.reset(scope)
            if prior.blocked_for:
                await self._store.lift(scope, BlockReason.CIRCUIT_OPEN)
            await self._store.lift(scope, BlockReason.PROBING)  # others' lease on it ends
            return
        # Only touch the store when there is something to count: this runs per request.
        if prior.streak > prior.failures:
            await self._store.reset(scope, ("rate_limits",))
        if prior.failures:
            await self._store.count(
                scope, "successes", ttl=self._settings.breaker_window, window=True
            )

    async def _cool_down(self, route: Route, verdict: Verdict) -> None:
        settings = self._settings
        wait = verdict.retry_after
        if wait is not None and wait <= 0:
            # "Retry now" (0, a negative, a date past) is no hint from a 429: as none, a
            # backoff, or an upstream that keeps saying it is tried 20 times a second.
            wait = None
        if wait is None:
            # No hint from the provider: exponential backoff, 2, 4, 8, ... seconds.
            streak = await self._store.count(
                route_scope(route), "rate_limits", ttl=settings.cooldown_max * 2
            )
            wait = settings.cooldown_initial * 2 ** (streak - 1)
        wait = min(max(wait, 0.05), settings.cooldown_max)
        await self._store.block(route_scope(route), wait, BlockReason.COOLDOWN)
        log.info(
            "route_cooled_down",
            route=route.id,
            seconds=round(wait, 3),
            hinted=verdict.retry_after is not None and verdict.retry_after > 0,
        )

    async def disable_key(
        self, key: Key, seconds: float, reason: BlockReason, upstream_message: str = ""
    ) -> None:
        """Every route of the key out for `seconds` (quota, auth, budget); warn once."""
        if await self._store.block(account_scope(key), seconds, reason):
            log.warning(
                "key_disabled",
                key=key.name,
                reason=reason,
                seconds=round(seconds, 3),
                upstream_message=upstream_message[:300],
            )

    async def restore(self, key: Key, routes: Iterable[Route]) -> list[tuple[str, BlockReason]]:
        """An operator's word that the key works again (credit added, a key revoked by
        mistake enabled again): the blocks on it and on `routes` (its routes) are lifted,
        on every replica sharing the state, but for a budget's (a budget raised by a
        reload lifts that); the routes' circuits, backoffs and last headroom reports
        start over. What was lifted, as (the key's or route's name, the reason)."""
        scopes = [(key.name, account_scope(key), False)]
        scopes += [(route.id, route_scope(route), True) for route in routes]
        lifted = []
        for name, scope, is_route in scopes:
            state = self._store.peek(scope)
            if is_route:
                await self._store.reset(scope)
                if state is not None and state.headroom is not None:
                    # The provider's last word on the bucket (spent, on a 429) goes too.
                    await self._store.put_headroom(scope, Headroom(), 1.0)
            if state is None or state.block is None or state.block.reason is _BUDGET:
                continue
            await self._store.lift(scope, state.block.reason)
            lifted.append((name, state.block.reason))
        if lifted:
            log.info("key_restored", key=key.name, lifted=[f"{n}: {r}" for n, r in lifted])
        return lifted

    async def block_model(self, model: str, seconds: float, reason: BlockReason) -> None:
        """The client model skipped (its fallbacks serve) for `seconds`; warn once."""
        if await self._store.block(f"model:{model}", seconds, reason):
            log.warning("model_disabled", model=model, reason=reason, seconds=round(seconds, 3))

    async def model_block(self, model: str) -> BlockReason | None:
        """The reason the client model is skipped now, or None."""
        state = (await self._store.read([f"model:{model}"])).get(f"model:{model}")
        return state.block.reason if state is not None and state.block is not None else None

    async def model_blocks(self, names: Iterable[str]) -> dict[str, Block]:
        """The blocks on these client models now (a budget's), by model name."""
        scopes = [f"model:{name}" for name in names]
        if not scopes:
            return {}
        states = await self._store.read(scopes)
        return {
            scope.partition(":")[2]: state.block
            for scope, state in states.items()
            if state.block is not None
        }

    async def _block_route(
        self, route: Route, seconds: float, reason: BlockReason, verdict: Verdict
    ) -> None:
        if await self._store.block(route_scope(route), seconds, reason):
            log.warning(
                "route_disabled",
                route=route.id,
                reason=reason,
                seconds=seconds,
                upstream_message=verdict.message[:300],
            )

    async def _count_failure(self, route: Route, verdict: Verdict, prior: RouteHealth) -> None:
        settings = self._settings
        scope = route_scope(route)
        if prior.opens:
            if prior.half_open:  # the probe failed: open again, for longer
                await self._open(route, prior.opens, verdict, probe=True)
            # Else a call let through while every route was open: the period stands.
            return
        failures = await self._store.count(
            scope, "failures", ttl=settings.breaker_window, window=True
        )
        successes = prior.successes
        if failures == 1 and successes:
            await self._store.reset(scope, ("successes",))  # a new window
            successes = 0
        if failures < settings.breaker_failures:
            return
        if failures < settings.breaker_failure_rate * (failures + successes):
            return
        await self._open(route, 0, verdict, probe=False, failures=failures)

    async def _open(
        self, route: Route, opens: int, verdict: Verdict, *, probe: bool, failures: int = 0
    ) -> None:
        """Open the circuit for breaker_open * 2 ** opens seconds (capped)."""
        settings = self._settings
        scope = route_scope(route)
        seconds = min(settings.breaker_open * 2**opens, settings.breaker_open_max)
        opened = await self._store.block(scope, seconds, BlockReason.CIRCUIT_OPEN)
        if not (opened or probe):
            return  # already open: a call that was under way when it opened
        # The backoff is remembered while the route is out, and for a while after.
        await self._store.count(scope, "opens", ttl=settings.breaker_open_max * 4)
        await self._store.reset(scope, ("failures", "successes"))
        log.warning(
            "circuit_opened",
            route=route.id,
            seconds=seconds,
            failures=failures,
            probe_failed=probe,
            last_failure=verdict.failure.value,
        )


class HealthView(Mapping[str, RouteHealth]):
    """Route id -> RouteHealth, each computed on first access and kept for the view's
    life (one request's choice): the state as of the first look, like a snapshot."""

    __slots__ = ("_index", "_seen", "_tracker")

    def __init__(self, tracker: HealthTracker, index: dict[str, tuple[Route, str, str]]) -> None:
        self._tracker = tracker
        self._index = index
        self._seen: dict[str, RouteHealth] = {}

    def __getitem__(self, route_id: str) -> RouteHealth:
        health = self._seen.get(route_id)
        if health is None:
            health = self._seen[route_id] = self._tracker._health(*self._index[route_id])
        return health

    def get(self, route_id: str, default: Any = None) -> Any:
        health = self._seen.get(route_id)
        if health is not None:
            return health
        entry = self._index.get(route_id)
        if entry is None:
            return default
        health = self._seen[route_id] = self._tracker._health(*entry)
        return health

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _headroom_ttl(headroom: Headroom) -> float:
    """Keep a report until the later of its resets, so a skipped route is retried then."""
    requests, tokens = headroom.requests_reset_in, headroom.tokens_reset_in
    if requests is None:
        return (60.0 if tokens is None else tokens) + 1.0
    return (requests if tokens is None or requests >= tokens else tokens) + 1.0


def _capped(headroom: Headroom, seconds: float) -> Headroom:
    def cap(reset: float | None) -> float | None:
        return None if reset is None else min(reset, seconds)

    return replace(
        headroom,
        requests_reset_in=cap(headroom.requests_reset_in),
        tokens_reset_in=cap(headroom.tokens_reset_in),
    )
