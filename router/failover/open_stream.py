"""A stream whose first content event is in hand, and where its attempt went.

The attempt that opened it (failover/attempt.py) settles it when the handler's
`async with` is left: health, metrics and cost, however the stream ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from router.failover.outgoing import key_redaction
from router.outcomes import Attempt, Headroom
from router.rules.plan import RouteHealth
from router.types import ModelSpec, Route
from router.upstream.translate import Response
from router.wire.dialects import Dialect
from router.wire.stream_watch import StreamEnd, StreamWatch


class Settles(Protocol):
    """What settles a stream's attempt once it ends (AttemptRunner)."""

    async def settle_stream(self, stream: OpenStream) -> None: ...


# The per-request values (Sent here; Outcome and _Reply in attempt.py; Call, Attempt,
# RouteHealth, Usage, StreamEnd, UsagePart and Headroom elsewhere) are not frozen, though
# nothing changes them: a frozen dataclass's __init__ costs about 1 us more per instance
# (object.__setattr__ per field), and they are built on every request. Call, Attempt,
# RouteHealth, Usage and StreamEnd were 6% of the router's instructions per plain
# request (bench/instructions.py: 0.720 M frozen, 0.674 M not).
@dataclass(slots=True)
class Sent:
    """Where one attempt went, when, and what the route's health was when it was chosen."""

    model: ModelSpec
    route: Route
    prior: RouteHealth
    started: float
    headroom: Headroom | None = None  # what the provider reported on this answer


class OpenStream:
    """A stream whose first content event is in hand; nothing has gone to the client.

    The handler commits the client's response and relays inside `async with stream:`.
    Leaving the block closes the upstream and settles the attempt (health, metrics,
    cost) with how the stream ended, `end`; when the relay did not get to set it (the
    client left, which cancels the handler), the watch says how far the stream got.
    """

    __slots__ = (
        "_runner",
        "attempts",
        "cost_usd",
        "end",
        "first",
        "redaction",
        "route",
        "sent",
        "served_by",
        "skipped",
        "upstream",
        "waited",
        "watch",
    )

    def __init__(
        self,
        runner: Settles,
        sent: Sent,
        upstream: Response,
        first: bytes,
        attempts: tuple[Attempt, ...],
        dialect: Dialect,
        max_event: int,
    ) -> None:
        self._runner = runner
        self.sent = sent
        self.route = sent.route
        self.served_by = sent.model.name  # the client-facing model that answered
        self.upstream = upstream
        self.first = first  # every byte read so far, to be sent first
        self.attempts = attempts
        self.watch = StreamWatch(dialect, max_event)
        # What the relay passes on is redacted too: an upstream may echo its key in an
        # error event after the stream has started.
        self.redaction = key_redaction(sent.route, dialect)
        self.end: StreamEnd | None = None
        self.cost_usd: float | None = None
        self.waited = 0.0  # seconds held for capacity (failover.max_wait)
        self.skipped: tuple[str, ...] = ()  # routes passed over untried, and why (the log)

    async def __aenter__(self) -> OpenStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.end is None:
            # The relay did not finish: the client left (a cancellation or a reset), or
            # the router failed. Either way the upstream is not to blame, and the stream
            # counts as delivered only if its terminator was already sent.
            self.end = self.watch.end(client_gone=True)
        try:
            self.upstream.finish()  # a stream the client left reaches the provider as cancelled
        finally:
            self.watch.let_go()
            # Only store operations that do not wait on the network may run here: on a
            # client's hang-up this runs in a cancelled task.
            await self._runner.settle_stream(self)
