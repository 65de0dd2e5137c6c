"""Why nothing could serve a request, once every route of its chain was tried or passed
over: rate limited (429, Retry-After the earliest recovery) or down (503)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router.errors import NoCapacity
from router.failover.call import Call
from router.failover.capable import CapableRoutes
from router.health.tracker import HealthTracker
from router.outcomes import Attempt, BlockReason, FailureClass
from router.rules.plan import unavailability
from router.types import ModelSpec

TRANSIENT_RETRY = 1.0  # seconds: the wait a client is told after a transient failure
_TRANSIENT = frozenset(
    {FailureClass.SERVER_ERROR, FailureClass.TIMEOUT, FailureClass.CONNECTION,
     FailureClass.OVERLOADED}
)  # fmt: skip


async def no_capacity(
    call: Call,
    attempts: Sequence[Attempt],
    models: Mapping[str, ModelSpec],
    capable: CapableRoutes,
    health: HealthTracker,
) -> NoCapacity:
    """The refusal to raise; raises the 400 itself when no route of the chain has what
    the request needs (its API, tools, images)."""
    refusal = capable.refusal(call.model, call.operation, call.needs)
    if refusal is not None:
        raise refusal
    limited_waits: list[float] = []
    down_waits: list[float] = []
    for name in call.model.chain:
        routes = capable.of(models[name], call.operation, call.needs)
        snapshot = await health.snapshot(routes)
        for route in routes:
            blocked = unavailability(route, snapshot[route.id], call.need_tokens)
            if blocked is None or blocked.recovers_in is None:
                continue
            (limited_waits if blocked.limited else down_waits).append(blocked.recovers_in)
    rate_limited = any(a.failure is FailureClass.RATE_LIMITED for a in attempts)
    limited = bool(limited_waits) or rate_limited
    if limited:
        retry_after: float | None = min(limited_waits, default=1.0)
    else:
        retry_after = min(down_waits, default=None)
        if retry_after is None and any(a.failure in _TRANSIENT for a in attempts):
            # A route that failed once (a 500, a timeout) and is still in rotation: the
            # SDK's own retry, a second on, may well get through, as it would straight
            # to the provider; without a wait the answer would tell it not to retry.
            retry_after = TRANSIENT_RETRY
    chain = " -> ".join(call.model.chain)
    if limited:
        message = f"every route of {chain} is rate limited"
    elif attempts:
        message = f"every route of {chain} failed or is unavailable"
    else:
        message = f"no route of {chain} is available"
    if retry_after is not None:
        message += f"; the earliest recovers in {retry_after:.1f}s"
    spent = [
        name
        for name in call.model.chain
        if models[name].budget is not None and await health.model_block(name) is BlockReason.BUDGET
    ]
    if spent:  # skipped whole, before any route: say why, or nothing would
        message += f"; over its budget until the period turns: {', '.join(spent)}"
    if attempts:
        tries = ", ".join(f"{a.route_id}: {a.failure.value}" for a in attempts)
        message += f" (attempts: {tries})"
    return NoCapacity(message, attempts=tuple(attempts), limited=limited, retry_after=retry_after)
