"""What handlers share: the app's state and the per-request trace the log line is built from."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from router.failover import Failover
from router.failover.attempt import OpenStream
from router.failover.call import Answer
from router.health.tracker import HealthTracker
from router.telemetry.logs import RequestLog
from router.telemetry.metrics import Metrics, RequestOutcome
from router.types import Attempt, Config, FailureClass
from router.wire.usage import Usage


@dataclass(frozen=True, slots=True)
class RouterState:
    config: Config
    health: HealthTracker
    failover: Failover
    metrics: Metrics
    request_log: RequestLog


APP_STATE = web.AppKey("router_state", RouterState)
REQUEST_TRACE = web.RequestKey("router_trace", "RequestTrace")


@dataclass(slots=True)
class RequestTrace:
    """Filled in as the request moves along; logged once at the end, when an open
    stream has settled, so its end, tokens and cost are read from it then."""

    request_id: str
    started: float
    model: str | None = None
    result: Answer | OpenStream | None = None
    failed_attempts: tuple[Attempt, ...] = ()  # from an error that carried them
    ttft: float | None = None  # seconds to the first content event, streams only

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return self.result.attempts if self.result is not None else self.failed_attempts

    @property
    def route(self) -> str | None:
        return self.result.route.id if self.result is not None else None

    @property
    def served_by(self) -> str | None:
        return self.result.served_by if self.result is not None else None

    @property
    def cost_usd(self) -> float | None:
        return self.result.cost_usd if self.result is not None else None

    @property
    def usage(self) -> Usage | None:
        if isinstance(self.result, OpenStream):
            return self.result.end.usage if self.result.end is not None else None
        return self.result.usage if self.result is not None else None

    @property
    def stream_outcome(self) -> str | None:
        end = self.result.end if isinstance(self.result, OpenStream) else None
        if end is None:
            return None
        return "client_gone" if end.client_gone else end.verdict.failure.value

    @property
    def stream_broke(self) -> bool:
        """A stream the upstream failed after its start reached the client."""
        end = self.result.end if isinstance(self.result, OpenStream) else None
        if end is None or end.client_gone:
            return False
        return end.verdict.failure is not FailureClass.OK

    @property
    def delivered(self) -> bool:
        """A stream whose terminator reached the client: served, even when the client
        hung up before the upstream's body ended."""
        end = self.result.end if isinstance(self.result, OpenStream) else None
        return end is not None and not end.client_gone

    def outcome(self, status: int) -> RequestOutcome:
        if status == 499:
            return RequestOutcome.CANCELLED
        if self.stream_broke:
            return RequestOutcome.FAILED  # the 200 went out, the end of the answer did not
        if status < 400:
            if self.served_by is not None and self.served_by != self.model:
                return RequestOutcome.SERVED_BY_FALLBACK
            if len(self.attempts) > 1:
                return RequestOutcome.SERVED_AFTER_FAILOVER
            return RequestOutcome.SERVED
        if status == 429:
            return RequestOutcome.EXHAUSTED
        return RequestOutcome.REJECTED if status < 500 else RequestOutcome.FAILED
