"""What handlers share: the app's state and the per-request trace the log line is built from."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from router.calls import Answer, Streamed
from router.failover import Failover
from router.health import HealthTracker
from router.logs import RequestLog
from router.metrics import Metrics, RequestOutcome
from router.types import Attempt, Config
from router.usage import Usage


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
    """Filled in as the request moves along; logged once at the end."""

    request_id: str
    started: float
    model: str | None = None
    route: str | None = None
    served_by: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    stream_outcome: str | None = None
    ttft: float | None = None  # seconds to the first content event, streams only
    usage: Usage | None = None
    cost_usd: float | None = None

    def served(self, result: Answer | Streamed) -> None:
        self.route = result.route.id
        self.served_by = result.served_by
        self.attempts = result.attempts
        self.cost_usd = result.cost_usd
        if isinstance(result, Streamed):
            end = result.end
            self.stream_outcome = "client_gone" if end.client_gone else end.verdict.failure.value
            self.usage = end.usage
        else:
            self.usage = result.usage

    def outcome(self, status: int) -> RequestOutcome:
        if status == 499:
            return RequestOutcome.CANCELLED
        if status < 400:
            if self.served_by is not None and self.served_by != self.model:
                return RequestOutcome.SERVED_BY_FALLBACK
            if len(self.attempts) > 1:
                return RequestOutcome.SERVED_AFTER_FAILOVER
            return RequestOutcome.SERVED
        if status == 429:
            return RequestOutcome.EXHAUSTED
        return RequestOutcome.REJECTED if status < 500 else RequestOutcome.FAILED
