"""Anthropic's rate-limit headers (provider-signals.md §4.3), from the key's buckets.

Anthropic reports four dimensions, each `-limit`, `-remaining` and `-reset`, where reset
is an RFC 3339 timestamp of when the bucket is full again. The simulator has one request
bucket and one combined token bucket, so `tokens`, `input-tokens` and `output-tokens` all
report the token bucket.

Buckets run on the injected monotonic clock, which has no calendar date, so a reset is
`time.time()` plus the bucket's seconds-to-full, rounded up to the whole second as the
real headers are (`2025-08-21T12:40:59Z`).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from router.sim.limits import DimensionState, LimitState

# What a `Fault.rate_limit` reports for a key the simulator does not limit: Anthropic's
# tier-1 numbers (50 RPM, 30,000 input tokens per minute), so a scripted 429 still
# carries the header family a real one does.
NOMINAL_RPM = 50
NOMINAL_TPM = 30_000

_TOKEN_DIMENSIONS = ("tokens", "input-tokens", "output-tokens")


def rfc3339_after(seconds: float, *, now: float | None = None) -> str:
    """The wall-clock time `seconds` from now, to the second, rounded up, in UTC."""
    moment = math.ceil((time.time() if now is None else now) + max(0.0, seconds) - 1e-6)
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(state: LimitState) -> dict[str, str]:
    now = time.time()
    headers: dict[str, str] = {}
    if state.requests is not None:
        _add(headers, "requests", state.requests, now)
    if state.tokens is not None:
        for name in _TOKEN_DIMENSIONS:
            _add(headers, name, state.tokens, now)
    return headers


def exhausted_requests_headers(state: LimitState, reset_seconds: float) -> dict[str, str]:
    """Headers of a scripted 429: the request bucket empty until `reset_seconds` from now."""
    limit = state.requests.limit if state.requests is not None else NOMINAL_RPM
    tokens = state.tokens or DimensionState(NOMINAL_TPM, NOMINAL_TPM, 0.0)
    return ratelimit_headers(LimitState(DimensionState(limit, 0, reset_seconds), tokens))


def _add(headers: dict[str, str], name: str, dim: DimensionState, now: float) -> None:
    prefix = f"anthropic-ratelimit-{name}"
    headers[f"{prefix}-limit"] = str(dim.limit)
    headers[f"{prefix}-remaining"] = str(dim.remaining)
    headers[f"{prefix}-reset"] = rfc3339_after(dim.reset_seconds, now=now)
