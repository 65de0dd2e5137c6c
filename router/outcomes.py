"""What one attempt produced, as every layer reads it: its failure class, the provider's
rate-limit headroom, the verdict on its answer, its record; and why a route is out of
rotation. The mapping from wire signals to these, and from these to what the router does
next, is `rules/failures.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


# On Python 3.11 an enum class has EnumType.__getattr__, so reading a member from its
# class (FailureClass.OK) goes through CPython's getattr hook: 90 ns against 9 ns for a
# global, and the specializer never caches it. The request path compares against
# members kept as module constants (`_OK = FailureClass.OK`) for that; 3.12 dropped it.
class FailureClass(StrEnum):
    """What an attempt's outcome means for routing (see provider-signals.md §11.1).

    The mapping from wire signals to a class, and from a class to what the router does
    next (`ACTIONS`), both live in `rules/failures.py`.
    """

    OK = "ok"
    RATE_LIMITED = "rate_limited"  # cool the route down, try the next one now
    EXCEEDS_TPM = "exceeds_tpm"  # this request can never fit this key's TPM: next route
    QUOTA = "quota"  # key out of rotation for a long time
    AUTH = "auth"  # 401/403: key out of rotation
    OVERLOADED = "overloaded"  # 529 and friends: capacity short for everyone
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    LOCAL_RESOURCE = "local_resource"  # the router itself is out of sockets, files, memory
    MODEL_NOT_FOUND = "model_not_found"  # route misconfigured: next route
    REDIRECT = "redirect"  # a 3xx: the route's address is wrong: next route
    # A 404 for what the request named (a stored response, a file): another key may hold it.
    NOT_ON_THIS_KEY = "not_on_this_key"
    CONTEXT_TOO_LONG = "context_too_long"  # the request's fault for this model
    CONTENT_POLICY = "content_policy"
    BAD_REQUEST = "bad_request"  # the request's fault: answer goes back unchanged
    UNKNOWN = "unknown"  # unrecognised: do not fail over, pass it on


class BlockReason(StrEnum):
    """Why a route, a key or a model is out of rotation for now."""

    COOLDOWN = "cooldown"  # a 429: its Retry-After, or backoff without one
    HEADROOM = "headroom"  # the provider's last report says the bucket is spent
    CIRCUIT_OPEN = "circuit_open"  # repeated transient failures
    PROBING = "probing"  # half-open: one probe is already in flight
    QUOTA = "quota"  # the key's credit or quota is spent
    AUTH = "auth"  # the provider refuses the key
    BUDGET = "budget"  # routes.yaml's spend cap for the key or model is reached
    MISCONFIGURED = "misconfigured"  # the upstream does not know the route's model

    @property
    def limited(self) -> bool:
        """Lifts by itself soon (a 429 with Retry-After for the client, not a 503)."""
        return self in _LIMITED

    @property
    def takes_key_out(self) -> bool:
        """Blocks every route of the key, not only one route."""
        return self in _KEY_OUT


_LIMITED = frozenset({BlockReason.COOLDOWN, BlockReason.HEADROOM})
_KEY_OUT = frozenset({BlockReason.QUOTA, BlockReason.AUTH, BlockReason.BUDGET})


# Not frozen, though nothing changes it: read from most responses (OpenAI's
# x-ratelimit-* come on every one; a frozen dataclass's __init__ sets each field through
# object.__setattr__, see failover/open_stream.py).
@dataclass(slots=True)
class Headroom:
    """Rate-limit headroom a provider reported on its last response for one route.

    `None` means unknown. `*_reset_in` is seconds from the response until the
    provider says the bucket is full again.
    """

    remaining_requests: int | None = None
    limit_requests: int | None = None
    requests_reset_in: float | None = None
    remaining_tokens: int | None = None
    limit_tokens: int | None = None
    tokens_reset_in: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """`rules/failures.py`'s reading of one upstream outcome."""

    failure: FailureClass
    retry_after: float | None = None  # seconds the provider asked us to wait, if it said
    message: str = ""


# Not frozen, though nothing changes it: built on every attempt (a frozen dataclass's
# __init__ sets each field through object.__setattr__; see failover/open_stream.py). Not
# keyword-only: the request path builds it positionally (see failover.call.Answer).
@dataclass(slots=True)
class Attempt:
    """One try of one route, as recorded for the response headers, logs and errors."""

    route_id: str
    model: str  # the client-facing model this attempt served
    failure: FailureClass
    status: int | None
    seconds: float
    detail: str = ""
    started: float = 0.0  # perf_counter when it was sent: a trace's span is drawn from it
