"""State this process reads back from outside it: the shared Redis, a snapshot file.

A value is taken only when it is one a router could have written. Another writer's
`NaN`, infinity, `1e300` or string would otherwise block a route for ever, turn a
budget off for the rest of its period (a `NaN` total is never over any limit), or
raise on the request path when a headroom count is compared.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from router.outcomes import Headroom
from router.rules.ratelimit import MAX_WAIT

# The longest a block or a total may last: a budget's block lasts until the month turns.
MAX_STATE_SECONDS = 40 * 86_400.0

_COUNTS = frozenset({"remaining_requests", "limit_requests", "remaining_tokens", "limit_tokens"})
_RESETS = frozenset(field.name for field in fields(Headroom)) - _COUNTS


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds_left(value: Any) -> float:
    """A duration in seconds; ValueError unless a number over 0 and at most
    MAX_STATE_SECONDS."""
    if not _number(value) or not 0 < value <= MAX_STATE_SECONDS:
        raise ValueError(f"not a duration: {value!r}")
    return float(value)


def amount(value: Any) -> float:
    """A total spent (USD), as a number or its text; ValueError unless finite, 0 or more."""
    spent = float(value)
    if not 0 <= spent < math.inf:
        raise ValueError(f"not an amount: {value!r}")
    return spent


def headroom(document: Any) -> Headroom:
    """A Headroom from its fields as JSON; ValueError unless every field is one it has,
    counts are whole numbers 0 or more and waits are within a day (or absent)."""
    if not isinstance(document, dict):
        raise ValueError(f"headroom is a JSON object, not {type(document).__name__}")
    for name, value in document.items():
        if value is None:
            continue
        if name in _COUNTS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"headroom {name}: not a count: {value!r}")
        elif name in _RESETS:
            if not _number(value) or not 0 <= value <= MAX_WAIT:
                raise ValueError(f"headroom {name}: not a wait: {value!r}")
        else:
            raise ValueError(f"headroom has no field {name!r}")
    return Headroom(**document)
