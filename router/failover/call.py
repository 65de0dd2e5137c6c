"""A client call as the handler parsed it, and the complete answer to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.outcomes import Attempt
from router.types import ModelSpec, Operation, Route
from router.wire.dialects import Dialect
from router.wire.usage import Usage


# Not frozen, though nothing changes it: built on every request (see failover/open_stream.py).
@dataclass(slots=True)
class Call:
    """One client request, parsed once by the handler."""

    model: ModelSpec
    operation: Operation
    dialect: Dialect  # the client's API: stream semantics and error shape
    payload: dict[str, Any]
    body: bytes
    stream: bool
    headers: Mapping[str, str]  # client headers that may be forwarded
    need_tokens: int = 0
    # The client did not ask for the usage chunk: attempts ask for it where the key allows
    # (failover/usage_ask.py), and the relay keeps it from the client.
    strip_usage: bool = False
    # The conversation's name for route affinity (rules/affinity.py); b"" for none.
    affinity: bytes = b""
    # The Capability mask the request needs of a route (wire/needs.py); 0 for none.
    needs: int = 0
    # A count (Operation.COUNT_TOKENS): it generates nothing, never waits, and teaches
    # health nothing. Said once here: an enum's class attribute costs a metaclass hook.
    counting: bool = False


# Not frozen, though nothing changes it: built on every request (see failover/open_stream.py).
# Not keyword-only: the request path builds it positionally (a class called with keywords
# gets them as a dict in CPython 3.11).
@dataclass(slots=True)
class Answer:
    """A complete response to send: the provider's (success or its verdict to pass on)."""

    status: int
    body: bytes
    content_type: str
    route: Route
    attempts: tuple[Attempt, ...]  # every attempt of the request, this one included
    served_by: str  # client-facing model that answered
    usage: Usage | None = None
    cost_usd: float | None = None
    waited: float = 0.0  # seconds held for capacity before the round that answered
    skipped: tuple[str, ...] = ()  # routes passed over untried, each with why (the log)


@dataclass(slots=True)
class Walked:
    """What a request cancelled mid-walk (its client gone, the drain's deadline) had
    tried, waited and passed over: the failover puts it on the cancellation, which is
    the only value that goes up then, for the request's log line."""

    attempts: tuple[Attempt, ...]
    waited: float
    skipped: tuple[str, ...]


def walked(exc: BaseException) -> Walked | None:
    """What the failover put on `exc`, a cancellation that ended its walk; None else."""
    found = getattr(exc, "walked", None)
    return found if isinstance(found, Walked) else None
