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
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from router.budgets import BudgetKeeper
from router.classify import OK, classify_exception, classify_response
from router.context_window import PromptSize
from router.dialects import Dialect
from router.errors import DeadlineExceeded, InvalidRequest, NoCapacity, UpstreamError
from router.health import HealthTracker
from router.metrics import Metrics
from router.policy import RouteHealth, plan, unavailability
from router.providers import PROVIDERS, Operation
from router.streaming import StreamEnd, read_first_event
from router.translate import TranslatedResponse, translator_for
from router.types import Attempt, Config, FailureClass, Headroom, ModelSpec, Route, Verdict
from router.upstream import Upstream, UpstreamResponse
from router.usage import Usage, usage_from_body

log = structlog.get_logger("router.failover")

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
    strip_usage: bool = False  # the router asked upstream for a usage chunk the client did not


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


@dataclass(slots=True)
class _Try:
    """One attempt in flight: where it went and, as it comes back, what it got."""

    call: Call
    model: ModelSpec
    route: Route
    started: float
    budget: float  # seconds left before the request deadline
    verdict: Verdict = OK
    status: int | None = None
    headroom: Headroom | None = None
    answer: Answer | None = None
    streamed: Streamed | None = None


_TOO_LONG = object()  # a model's answer was "context too long": go to its context fallback


@dataclass(slots=True)
class _Walk:
    prompt: PromptSize
    attempts: list[Attempt] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)
    too_big: frozenset[str] = frozenset()  # routes skipped: the prompt exceeds their window
    tried: set[str] = field(default_factory=set)
    fallen_back: set[str] = field(default_factory=set)  # fallback models entered
    tpm_answer: Answer | None = None


class Failover:
    """The walk over routes and fallbacks. Durations are real time (perf_counter); the
    injected clock belongs to the health state alone."""

    def __init__(
        self,
        config: Config,
        health: HealthTracker,
        upstream: Upstream,
        metrics: Metrics,
        budgets: BudgetKeeper,
        *,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._health = health
        self._upstream = upstream
        self._metrics = metrics
        self._budgets = budgets
        self._rng = rng
        self._clock = time.perf_counter
        self._serving_cache: dict[tuple[str, Operation], ModelSpec] = {}
        self._serves_cache: dict[tuple[str, Operation], bool] = {}

    async def run(self, call: Call, sink: StreamSink) -> Answer | Streamed:
        deadline = asyncio.get_running_loop().time() + self._config.timeouts.request
        walk = _Walk(prompt=PromptSize(call.body, call.payload.get("messages")))
        pending = list(call.model.chain)
        while pending:
            model = self._config.models[pending.pop(0)]
            if model.name in walk.visited:
                continue
            walk.visited.add(model.name)
            if model.budget is not None and await self._health.model_block(model.name):
                continue  # over its budget: its fallbacks serve until the period turns
            serving = self._serving(model, call.operation)
            too_big = await walk.prompt.too_big_for(serving.routes)
            walk.too_big |= too_big
            if too_big and len(too_big) == len(serving.routes) and model.context_fallback:
                pending[:0] = model.context_fallback  # no route can hold this prompt
                continue
            result = await self._walk_model(call, serving, too_big, walk, deadline, sink)
            if result is _TOO_LONG:
                pending[:0] = model.context_fallback
            elif result is not None:
                return result
        if walk.tpm_answer is not None and all(
            a.failure is FailureClass.EXCEEDS_TPM for a in walk.attempts
        ):
            return walk.tpm_answer  # no key can take a request this large: say so as-is
        if walk.too_big and not walk.attempts:
            raise InvalidRequest(
                f"the prompt (about {walk.prompt.estimate} tokens) is longer than the context "
                f"window of every route of {' -> '.join(call.model.chain)}",
                "context_length_exceeded",
            )
        raise await self._exhausted(call, walk.attempts)

    async def _walk_model(
        self,
        call: Call,
        model: ModelSpec,
        too_big: frozenset[str],
        walk: _Walk,
        deadline: float,
        sink: StreamSink,
    ) -> Answer | Streamed | object | None:
        """Try `model`'s routes in plan order: the answer, _TOO_LONG, or None (none left)."""
        loop = asyncio.get_running_loop()
        while len(walk.attempts) < self._config.failover.max_attempts:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"request deadline of {self._config.timeouts.request:g}s passed after "
                    f"{len(walk.attempts)} attempts",
                    walk.attempts,
                )
            snapshot = await self._health.snapshot(model.routes)
            routes = plan(
                model,
                snapshot,
                self._rng,
                need_tokens=call.need_tokens,
                exclude=walk.tried | too_big if too_big else walk.tried,
            ).routes
            if not routes:
                return None
            route = routes[0]
            if model.name != call.model.name and model.name not in walk.fallen_back:
                walk.fallen_back.add(model.name)
                self._metrics.fallbacks.labels(call.model.name, model.name).inc()
            walk.tried.add(route.id)
            attempt = _Try(call, model, route, started=self._clock(), budget=remaining)
            result = await self._attempt(attempt, snapshot[route.id], walk, sink)
            if (
                isinstance(result, Answer)
                and attempt.verdict.failure is FailureClass.CONTEXT_TOO_LONG
                and self._config.models[model.name].context_fallback
            ):
                return _TOO_LONG  # the provider said so: the context fallback takes it
            if result is not None:
                return result
        return None

    async def _attempt(
        self, attempt: _Try, prior: RouteHealth, walk: _Walk, sink: StreamSink
    ) -> Answer | Streamed | None:
        """Send one attempt, record what it taught us; the answer, or None to go on."""
        route = attempt.route
        self._health.begin(route)
        try:
            await self._exchange(attempt, walk, sink)
        except UpstreamError as exc:
            attempt.verdict = classify_exception(exc)
        finally:
            self._health.end(route)
        verdict = attempt.verdict
        seconds = self._clock() - attempt.started
        await self._health.record(
            route, verdict, prior=prior, seconds=seconds, headroom=attempt.headroom
        )
        self._count(attempt, seconds)
        await self._charge(attempt)
        if attempt.streamed is not None:
            return attempt.streamed
        walk.attempts.append(self._record_of(attempt))
        if not verdict.failure.fails_over:
            return attempt.answer
        if verdict.failure is FailureClass.EXCEEDS_TPM:
            walk.tpm_answer = attempt.answer
        log.info(
            "failover",
            model=attempt.call.model.name,
            route=route.id,
            failure=verdict.failure.value,
            status=attempt.status,
            retry_after=verdict.retry_after,
            detail=verdict.message[:200],
        )
        return None

    async def _exchange(self, attempt: _Try, walk: _Walk, sink: StreamSink) -> None:
        call, route = attempt.call, attempt.route
        timeouts = self._config.timeouts
        head_timeout = min(timeouts.first_byte, attempt.budget)
        provider = PROVIDERS.get(route.key.provider)
        translator = translator_for(route.key.provider, call.operation)
        response: UpstreamResponse | TranslatedResponse
        if translator is not None:
            response = await translator.send(
                route, call.operation, call.payload, stream=call.stream, head_timeout=head_timeout
            )
        else:
            assert provider is not None  # config accepts only known or litellm providers
            headers = {
                **call.headers,
                **provider.auth_headers(route.key, call.headers),
                "Content-Type": "application/json",
            }
            response = await self._upstream.send(
                route,
                provider.url(route.key, call.operation, route.model),
                _body_for(call, route),
                headers,
                head_timeout=head_timeout,
            )
        try:
            attempt.status = status = response.status
            attempt.headroom = provider.headroom(response.headers) if provider else None
            content_type = response.headers.get("content-type", "application/json")
            if call.stream and status == 200 and content_type.startswith("text/event-stream"):
                await self._open_stream(attempt, response, walk, sink)
                return
            body = await response.read(min(timeouts.idle, attempt.budget))
            attempt.verdict = classify_response(status, response.headers, body)
            ok = attempt.verdict.failure is FailureClass.OK
            if not ok:
                body = _without_key(body, route)
            attempt.answer = Answer(
                status,
                body,
                content_type,
                route,
                walk.attempts,
                attempt.model.name,
                usage_from_body(body) if ok else None,
            )
        finally:
            response.finish()

    async def _open_stream(
        self, attempt: _Try, response: UpstreamResponse, walk: _Walk, sink: StreamSink
    ) -> None:
        """Wait for the first content event; hand the stream to the sink if it is good."""
        elapsed = self._clock() - attempt.started
        first_timeout = min(self._config.timeouts.first_byte, attempt.budget) - elapsed
        first = await read_first_event(response, attempt.call.dialect, first_timeout)
        attempt.verdict = first.error or OK
        if attempt.verdict.failure is FailureClass.OK:
            walk.attempts.append(self._record_of(attempt))
            end = await sink(attempt.route, response, first.buffer, walk.attempts)
            attempt.streamed = Streamed(attempt.route, walk.attempts, attempt.model.name, end)
            attempt.verdict = end.verdict
            return
        # Nothing is committed yet: an error event that is not ours to fail over (the
        # request's own fault) goes back as a plain error answer.
        attempt.status = 400 if attempt.verdict.failure.is_caller_fault else 502
        attempt.answer = Answer(
            attempt.status,
            first.data,
            "application/json",
            attempt.route,
            walk.attempts,
            attempt.model.name,
        )

    def _serving(self, model: ModelSpec, operation: Operation) -> ModelSpec:
        """The model with only the routes whose provider serves `operation` natively.

        Cached per (model, operation), so that the route tuples stay the same objects
        (the health tracker keys its caches on them).
        """
        cached = self._serving_cache.get((model.name, operation))
        if cached is None:
            routes = tuple(r for r in model.routes if _can_serve(r, operation))
            cached = model if routes == model.routes else replace(model, routes=routes)
            self._serving_cache[(model.name, operation)] = cached
        return cached

    def serves(self, model: ModelSpec, operation: Operation) -> bool:
        """Whether any model of the chain has a route for `operation` (cached)."""
        known = self._serves_cache.get((model.name, operation))
        if known is None:
            known = self._serves_cache[(model.name, operation)] = any(
                self._serving(self._config.models[name], operation).routes for name in model.chain
            )
        return known

    def _count(self, attempt: _Try, seconds: float) -> None:
        series = self._metrics.route_series(attempt.model.name, attempt.route)
        failure = attempt.verdict.failure
        series.attempts[failure].inc()
        series.upstream_seconds.observe(seconds)
        if failure.fails_over:
            series.failovers[failure].inc()
        usage = self._usage_of(attempt)
        if usage is not None:
            series.tokens_in.inc(usage.input_tokens)
            series.tokens_out.inc(usage.output_tokens)

    @staticmethod
    def _usage_of(attempt: _Try) -> Usage | None:
        if attempt.streamed is not None:
            return attempt.streamed.end.usage
        return attempt.answer.usage if attempt.answer is not None else None

    async def _charge(self, attempt: _Try) -> None:
        """The answer's cost from the provider's usage and the route's price."""
        done = attempt.streamed or attempt.answer
        usage = self._usage_of(attempt)
        price = attempt.route.price
        if done is None or usage is None or price is None:
            return
        done.cost_usd = price.cost(usage.input_tokens, usage.output_tokens)
        self._metrics.route_series(attempt.model.name, attempt.route).spend.inc(done.cost_usd)
        await self._budgets.spend(attempt.route, attempt.model, done.cost_usd)

    def _record_of(self, attempt: _Try) -> Attempt:
        return Attempt(
            route_id=attempt.route.id,
            model=attempt.model.name,
            failure=attempt.verdict.failure,
            status=attempt.status,
            seconds=self._clock() - attempt.started,
            detail=attempt.verdict.message[:200],
        )

    async def _exhausted(self, call: Call, attempts: list[Attempt]) -> NoCapacity:
        """Why nothing could serve: limited (429, wait for the earliest recovery) or down."""
        limited_waits: list[float] = []
        down_waits: list[float] = []
        for name in call.model.chain:
            model = self._config.models[name]
            model = self._serving(model, call.operation)
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


def _can_serve(route: Route, operation: Operation) -> bool:
    """Natively (byte passthrough) or through litellm's translation."""
    native = PROVIDERS.get(route.key.provider)
    if native is not None and operation in native.operations:
        return True
    return translator_for(route.key.provider, operation) is not None


def _without_key(body: bytes, route: Route) -> bytes:
    """Some providers echo the key in an error; such a body must not reach the client."""
    secret = route.key.api_key.encode()
    return body.replace(secret, b"[redacted]") if secret and secret in body else body


def _body_for(call: Call, route: Route) -> bytes:
    """The client's bytes untouched when the upstream model name is the same."""
    if call.payload.get("model") == route.model:
        return call.body
    payload = {**call.payload, "model": route.model}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = ["Answer", "Call", "Failover", "StreamSink", "Streamed"]
