"""The attempt loop: the requested model's routes, then its fallback chain.

    for model in [requested, *fallback chain]:
        for route in policy.plan(model, health.snapshot()):      # re-planned after each try
            send -> classify -> health.record
            ok: return | the request's own fault, unknown: pass upstream's answer on | else: next
    raise NoCapacity   # 429 + Retry-After when rate-limited, 503 when routes are down

`max_attempts` and the per-request deadline bound the whole walk.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from router.classify import classify_exception, classify_response
from router.errors import DeadlineExceeded, NoCapacity, UpstreamError
from router.health import HealthTracker
from router.policy import RouteHealth, plan, unavailability
from router.ratelimit import parse_headroom
from router.streaming import StreamEnd, error_in_event, read_first_event
from router.types import Attempt, Config, FailureClass, Headroom, ModelSpec, Route, Verdict
from router.upstream import Upstream, UpstreamResponse

log = structlog.get_logger("router.failover")

StreamSink = Callable[[Route, UpstreamResponse, bytes, list[Attempt]], Awaitable[StreamEnd]]


@dataclass(frozen=True, slots=True)
class Call:
    """One client request, parsed once by the handler."""

    model: ModelSpec
    path: str  # appended to the key's api_base, e.g. "/chat/completions"
    payload: dict[str, Any]
    body: bytes
    stream: bool
    headers: Mapping[str, str]  # client headers that may be forwarded
    need_tokens: int = 0


@dataclass(slots=True)
class Answer:
    """A complete response to send: the provider's (success or its verdict to pass on)."""

    status: int
    body: bytes
    content_type: str
    route: Route
    attempts: list[Attempt]
    served_by: str  # client-facing model that answered


@dataclass(slots=True)
class Streamed:
    """The stream went to the client through the sink; it has already been answered."""

    route: Route
    attempts: list[Attempt]
    served_by: str
    end: StreamEnd


@dataclass(slots=True)
class _Walk:
    attempts: list[Attempt] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    tpm_answer: Answer | None = None


class Failover:
    def __init__(
        self,
        config: Config,
        health: HealthTracker,
        upstream: Upstream,
        *,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._health = health
        self._upstream = upstream
        self._rng = rng
        self._clock = clock

    async def run(self, call: Call, sink: StreamSink) -> Answer | Streamed:
        loop = asyncio.get_running_loop()
        timeouts, settings = self._config.timeouts, self._config.failover
        deadline = loop.time() + timeouts.request
        walk = _Walk()
        for model_name in call.model.chain:
            model = self._config.models[model_name]
            while len(walk.attempts) < settings.max_attempts:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise DeadlineExceeded(
                        f"request deadline of {timeouts.request:g}s passed after "
                        f"{len(walk.attempts)} attempts",
                        walk.attempts,
                    )
                snapshot = await self._health.snapshot(model.routes)
                routes = plan(
                    model, snapshot, self._rng, need_tokens=call.need_tokens, exclude=walk.tried
                ).routes
                if not routes:
                    break
                route = routes[0]
                walk.tried.add(route.id)
                result = await self._attempt(
                    call, model, route, snapshot[route.id], walk, remaining, sink
                )
                if result is not None:
                    return result
        if walk.tpm_answer is not None and all(
            a.failure is FailureClass.EXCEEDS_TPM for a in walk.attempts
        ):
            return walk.tpm_answer  # no key can take a request this large: say so as-is
        raise await self._exhausted(call, walk.attempts)

    async def _attempt(
        self,
        call: Call,
        model: ModelSpec,
        route: Route,
        prior: RouteHealth,
        walk: _Walk,
        remaining: float,
        sink: StreamSink,
    ) -> Answer | Streamed | None:
        timeouts = self._config.timeouts
        started = self._clock()
        headroom: Headroom | None = None
        status: int | None = None
        answer: Answer | None = None
        streamed: Streamed | None = None
        self._health.begin(route)
        try:
            async with self._upstream.open(
                route,
                call.path,
                _body_for(call, route),
                call.headers,
                head_timeout=min(timeouts.first_byte, remaining),
            ) as response:
                status = response.status
                headroom = parse_headroom(response.headers)
                content_type = response.headers.get("content-type", "application/json")
                if call.stream and status == 200 and content_type.startswith("text/event-stream"):
                    first_timeout = min(timeouts.first_byte, remaining) - (self._clock() - started)
                    first, data = await read_first_event(response, first_timeout)
                    verdict = error_in_event(data) or classify_response(status, {}, b"")
                    if verdict.failure is FailureClass.OK:
                        walk.attempts.append(
                            _attempt_of(route, model, verdict, status, started, self._clock())
                        )
                        end = await sink(route, response, first, walk.attempts)
                        streamed = Streamed(route, walk.attempts, model.name, end)
                        verdict = end.verdict
                    else:
                        # Nothing is committed yet: an error event that is not ours to fail
                        # over (the request's own fault) goes back as a plain error answer.
                        status = 400 if verdict.failure.is_caller_fault else 502
                        answer = Answer(
                            status, data, "application/json", route, walk.attempts, model.name
                        )
                else:
                    body = await response.read(min(timeouts.idle, remaining))
                    verdict = classify_response(status, response.headers, body)
                    answer = Answer(status, body, content_type, route, walk.attempts, model.name)
        except UpstreamError as exc:
            verdict = classify_exception(exc)
        finally:
            self._health.end(route)
        seconds = self._clock() - started
        await self._health.record(route, verdict, prior=prior, seconds=seconds, headroom=headroom)
        if streamed is not None:
            return streamed
        walk.attempts.append(_attempt_of(route, model, verdict, status, started, self._clock()))
        if not verdict.failure.fails_over:
            return answer
        if verdict.failure is FailureClass.EXCEEDS_TPM:
            walk.tpm_answer = answer
        log.info(
            "failover",
            model=call.model.name,
            route=route.id,
            failure=verdict.failure.value,
            status=status,
            retry_after=verdict.retry_after,
            detail=verdict.message[:200],
        )
        return None

    async def _exhausted(self, call: Call, attempts: list[Attempt]) -> NoCapacity:
        """Why nothing could serve: limited (429, wait for the earliest recovery) or down."""
        limited_waits: list[float] = []
        down_waits: list[float] = []
        for name in call.model.chain:
            model = self._config.models[name]
            snapshot = await self._health.snapshot(model.routes)
            for route in model.routes:
                blocked = unavailability(route, snapshot[route.id], call.need_tokens)
                if blocked is None or blocked.recovers_in is None:
                    continue
                (limited_waits if blocked.limited else down_waits).append(blocked.recovers_in)
        rate_limited = any(a.failure is FailureClass.RATE_LIMITED for a in attempts)
        limited = bool(limited_waits) or rate_limited
        if limited:
            retry_after: float | None = min(limited_waits, default=1.0)
        else:
            retry_after = min(down_waits, default=None)
        chain = " -> ".join(call.model.chain)
        if limited:
            message = f"every route of {chain} is rate limited"
        elif attempts:
            message = f"every route of {chain} failed or is unavailable"
        else:
            message = f"no route of {chain} is available"
        if retry_after is not None:
            message += f"; the earliest recovers in {retry_after:.1f}s"
        if attempts:
            tries = ", ".join(f"{a.route_id}: {a.failure.value}" for a in attempts)
            message += f" (attempts: {tries})"
        return NoCapacity(message, attempts=attempts, limited=limited, retry_after=retry_after)


def _attempt_of(
    route: Route, model: ModelSpec, verdict: Verdict, status: int | None, start: float, end: float
) -> Attempt:
    return Attempt(
        route_id=route.id,
        model=model.name,
        failure=verdict.failure,
        status=status,
        seconds=end - start,
        detail=verdict.message[:200],
    )


def _body_for(call: Call, route: Route) -> bytes:
    """The client's bytes untouched when the upstream model name is the same."""
    if call.payload.get("model") == route.model:
        return call.body
    payload = {**call.payload, "model": route.model}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = ["Answer", "Call", "Failover", "StreamSink", "Streamed"]
