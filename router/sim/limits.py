"""Honest per-key rate limits: OpenAI-style token buckets with continuous refill.

Each limited dimension (requests, tokens) is a bucket holding at most `limit` units and
refilling `limit` units per 60 s, so a drained bucket is full again after a minute. OpenAI
reserves a request's tokens against `max_tokens` up front (provider-signals.md §11.4), so
a request is admitted only if both buckets can pay in full, and then pays at once.
Rejected requests pay nothing.

Time comes only from the clock passed in (`now` arguments), so tests can step it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WINDOW_SECONDS = 60.0

# Float refill can land a hair under a whole unit (29.999999 instead of 30 s worth);
# treat that as enough so a test that advances by exactly the advertised wait succeeds.
_EPSILON = 1e-9

Dimension = Literal["requests", "tokens"]


@dataclass(slots=True)
class TokenBucket:
    limit: int
    level: float
    updated: float

    @classmethod
    def full(cls, limit: int, now: float) -> TokenBucket:
        return cls(limit=limit, level=float(limit), updated=now)

    def refill(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            # elapsed * limit / window (not elapsed * rate) keeps whole-second steps exact.
            self.level = min(float(self.limit), self.level + elapsed * self.limit / WINDOW_SECONDS)
        self.updated = now

    def wait_for(self, amount: int) -> float:
        """Seconds until `amount` units are in the bucket (0 if they already are)."""
        missing = amount - self.level
        if missing <= _EPSILON:
            return 0.0
        return missing * WINDOW_SECONDS / self.limit

    def take(self, amount: int) -> None:
        self.level = max(0.0, self.level - amount)

    @property
    def remaining(self) -> int:
        return int(self.level + _EPSILON)

    @property
    def seconds_to_full(self) -> float:
        return (self.limit - self.level) * WINDOW_SECONDS / self.limit


@dataclass(frozen=True, slots=True)
class DimensionState:
    """One dimension as the `x-ratelimit-*-{requests,tokens}` headers report it."""

    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class LimitState:
    requests: DimensionState | None
    tokens: DimensionState | None


NO_LIMITS = LimitState(None, None)


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's verdict on one request.

    `admitted` False with `too_large` True means the request can never fit the TPM bucket;
    otherwise `wait` seconds is when it would fit, and `dimension` names the bucket short
    of room (the one with the longer wait when both are).
    """

    admitted: bool
    state: LimitState
    dimension: Dimension | None = None
    wait: float = 0.0
    too_large: bool = False
    requested: int = 0


class KeyLimits:
    """The request and token buckets of one key; either may be absent (unlimited)."""

    __slots__ = ("_requests", "_tokens")

    def __init__(self, rpm: int | None, tpm: int | None, now: float) -> None:
        self._requests = TokenBucket.full(rpm, now) if rpm else None
        self._tokens = TokenBucket.full(tpm, now) if tpm else None

    @property
    def unlimited(self) -> bool:
        return self._requests is None and self._tokens is None

    def admit(self, tokens: int, now: float) -> Admission:
        """Pay 1 request and `tokens` tokens if both buckets have room, else say how long."""
        self._refill(now)
        req, tok = self._requests, self._tokens
        if tok is not None and tokens > tok.limit:
            return Admission(False, self.state(now), "tokens", too_large=True, requested=tokens)
        req_wait = req.wait_for(1) if req is not None else 0.0
        tok_wait = tok.wait_for(tokens) if tok is not None else 0.0
        if req_wait > 0 or tok_wait > 0:
            dimension: Dimension = "requests" if req_wait >= tok_wait else "tokens"
            requested = 1 if dimension == "requests" else tokens
            wait = max(req_wait, tok_wait)
            return Admission(False, self.state(now), dimension, wait, requested=requested)
        if req is not None:
            req.take(1)
        if tok is not None:
            tok.take(tokens)
        return Admission(True, self.state(now))

    def state(self, now: float) -> LimitState:
        self._refill(now)
        return LimitState(_dimension(self._requests), _dimension(self._tokens))

    def rebase(self, now: float) -> None:
        """Keep the levels but restart the timeline, for a clock swapped mid-run."""
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.updated = now

    def _refill(self, now: float) -> None:
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)


def _dimension(bucket: TokenBucket | None) -> DimensionState | None:
    if bucket is None:
        return None
    return DimensionState(bucket.limit, bucket.remaining, bucket.seconds_to_full)
