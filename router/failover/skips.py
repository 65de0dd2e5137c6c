"""Why a request passed routes over without trying them, for its `request` log line.

The walk keeps the plan's `Unavailable` of each route it passed over (only when one
was); the words are made once, when the request ends: `primary/gpt-5.4: headroom spent
(by its rate-limit headers), back in 58.0s`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from router.outcomes import Attempt, BlockReason
from router.rules.plan import Unavailable

_WHY = {
    BlockReason.COOLDOWN: "cooling down after a 429",
    BlockReason.HEADROOM: "headroom spent (by its rate-limit headers)",
    BlockReason.CIRCUIT_OPEN: "circuit open",
    BlockReason.PROBING: "circuit half-open, its probe in flight",
    BlockReason.QUOTA: "key disabled (quota)",
    BlockReason.AUTH: "key disabled (auth)",
    BlockReason.BUDGET: "over its budget",
    BlockReason.MISCONFIGURED: "the upstream does not know the route's model",
}


def skip_notes(skipped: Mapping[str, Unavailable], attempts: Iterable[Attempt]) -> tuple[str, ...]:
    """One note per route passed over and never tried later in the request."""
    if not skipped:
        return ()
    tried = {attempt.route_id for attempt in attempts}
    return tuple(_note(blocked) for route_id, blocked in skipped.items() if route_id not in tried)


def _note(blocked: Unavailable) -> str:
    note = f"{blocked.route.id}: {_WHY.get(blocked.reason, blocked.reason.value)}"
    if blocked.recovers_in is not None:
        verb = "next probe in" if blocked.reason is BlockReason.CIRCUIT_OPEN else "back in"
        note += f", {verb} {blocked.recovers_in:.1f}s"
    return note
