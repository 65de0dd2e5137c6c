"""What handlers share: the app's state and the per-request trace the log line is built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from router.failover import Failover
from router.failover.call import Answer
from router.failover.open_stream import OpenStream
from router.handlers.client_stream import ClientStream
from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.outcomes import Attempt, FailureClass
from router.rules.failures import ACTIONS
from router.telemetry.labels import RequestOutcome
from router.telemetry.logs import RequestLog
from router.telemetry.metrics import Metrics
from router.telemetry.tracing import Tracing
from router.types import Config
from router.wire.stream_watch import StreamEnd

# Module constants, not enum class attributes, on the request path: see router/outcomes.py.
_OK, _SERVED = FailureClass.OK, RequestOutcome.SERVED


@dataclass(frozen=True, slots=True)
class RouterState:
    config: Config
    health: HealthTracker
    failover: Failover
    metrics: Metrics
    request_log: RequestLog
    state_store: StateStore
    tracing: Tracing | None = None  # OpenTelemetry traces, when on (telemetry/tracing.py)


class Current:
    """The state requests start on. A reload swaps `state` in one assignment; a handler
    reads it once, at its start, so a request finishes on the config it began with.
    `draining`: the process is shutting down (SIGTERM), so /readyz answers 503."""

    __slots__ = ("draining", "state")

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.draining = False


APP_STATE = web.AppKey("router_state", Current)
REQUEST_TRACE = web.RequestKey("router_trace", "RequestTrace")


@dataclass(slots=True)
class RequestTrace:
    """Filled in as the request moves along; logged once at the end, when an open
    stream has settled, so its end, tokens and cost are read from it then."""

    request_id: str
    started: float
    model: str | None = None
    route: str | None = None
    served_by: str | None = None
    attempts: tuple[Attempt, ...] = ()
    result: Answer | OpenStream | None = None
    ttft: float | None = None  # seconds to the first content event, streams only
    committed: ClientStream | None = None  # a stream's response, once its head is sent
    cut: bool = False  # the drain's deadline passed: the router ends this request
    waited: float | None = None  # seconds held for capacity, once the failover said
    skipped: tuple[str, ...] = ()  # routes the failover passed over untried, and why
    body_held: int = 0  # bytes of the body room (body_room.py) this request holds
    body: tuple[bytes, dict[str, Any]] | None = None  # the body and its parse, once read

    def served(self, result: Answer | OpenStream) -> None:
        self.result = result
        self.route = result.route.id
        self.served_by = result.served_by
        self.attempts = result.attempts
        self.waited = result.waited
        self.skipped = result.skipped

    @property
    def stream_end(self) -> StreamEnd | None:
        """How a stream ended, once it has settled; None for anything else."""
        return self.result.end if isinstance(self.result, OpenStream) else None

    @property
    def delivered(self) -> bool:
        """A stream whose terminator reached the client: served, even when the client
        hung up before the upstream's body ended."""
        end = self.stream_end
        return end is not None and not end.client_gone

    def outcome(self, status: int, end: StreamEnd | None) -> RequestOutcome:
        if status == 499:
            return RequestOutcome.CANCELLED
        if end is not None and not end.client_gone and end.verdict.failure is not _OK:
            # The 200 went out, the end of the answer did not: whose fault, as for an
            # error answer (a 4xx is the caller's).
            if ACTIONS[end.verdict.failure].caller_fault:
                return RequestOutcome.REJECTED
            return RequestOutcome.FAILED
        if status < 400:
            if self.served_by is not None and self.served_by != self.model:
                return RequestOutcome.SERVED_BY_FALLBACK
            if len(self.attempts) > 1:
                return RequestOutcome.SERVED_AFTER_FAILOVER
            return _SERVED
        if status == 429:
            return RequestOutcome.EXHAUSTED
        return RequestOutcome.REJECTED if status < 500 else RequestOutcome.FAILED
