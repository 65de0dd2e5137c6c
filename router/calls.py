"""A client call as the handler parsed it, and what answered it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from router.dialects import Dialect
from router.providers import Operation
from router.streaming import StreamEnd
from router.types import Attempt, ModelSpec, Route
from router.upstream import UpstreamResponse
from router.usage import Usage

StreamSink = Callable[[Route, UpstreamResponse, bytes, list[Attempt]], Awaitable[StreamEnd]]


@dataclass(frozen=True, slots=True)
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
    # (usage_request.py), and the relay keeps it from the client.
    strip_usage: bool = False


@dataclass(slots=True)
class Answer:
    """A complete response to send: the provider's (success or its verdict to pass on)."""

    status: int
    body: bytes
    content_type: str
    route: Route
    attempts: list[Attempt]
    served_by: str  # client-facing model that answered
    usage: Usage | None = None
    cost_usd: float | None = None


@dataclass(slots=True)
class Streamed:
    """The stream went to the client through the sink; it has already been answered."""

    route: Route
    attempts: list[Attempt]
    served_by: str
    end: StreamEnd
    cost_usd: float | None = None
