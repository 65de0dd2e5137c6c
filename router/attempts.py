"""One attempt: send a call to one route, read or open the answer, learn from it.

The upstream is reached byte for byte when the route's provider speaks the client's API
and through `translate/` when it does not; either way the answer is classified, the
health tracker records it, and metrics and cost are counted here, once per attempt.
Durations are real time (perf_counter); the injected clock belongs to health state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from router.body_edits import with_model, with_usage_requested
from router.budgets import BudgetKeeper
from router.calls import Answer, Call, Streamed, StreamSink
from router.classify import OK, classify_exception, classify_response
from router.errors import UpstreamError
from router.health import HealthTracker
from router.metrics import Metrics
from router.policy import RouteHealth
from router.providers import PROVIDERS
from router.streaming import read_first_event
from router.translate import TranslatedResponse, translator_for
from router.types import Attempt, FailureClass, Headroom, ModelSpec, Route, Timeouts, Verdict
from router.upstream import Upstream, UpstreamResponse
from router.usage import Usage, usage_from_body
from router.usage_request import UsageRequest


@dataclass(slots=True)
class Try:
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


class AttemptRunner:
    def __init__(
        self,
        timeouts: Timeouts,
        health: HealthTracker,
        upstream: Upstream,
        metrics: Metrics,
        budgets: BudgetKeeper,
    ) -> None:
        self._timeouts = timeouts
        self._health = health
        self._upstream = upstream
        self._metrics = metrics
        self._usage_request = UsageRequest()
        self._budgets = budgets
        self._clock = time.perf_counter

    async def run(
        self, attempt: Try, prior: RouteHealth, attempts: list[Attempt], sink: StreamSink
    ) -> None:
        """Send one attempt and record what it taught us; the outcome is on `attempt`.

        A stream that commits is recorded in `attempts` at its commit (the client's
        headers count it); any other outcome is recorded here.
        """
        route = attempt.route
        self._health.begin(route)
        try:
            ask_usage = self._usage_request.wanted(attempt.call, route.key)
            while not await self._exchange(attempt, attempts, sink, ask_usage=ask_usage):
                ask_usage = False  # the upstream refused the usage ask: again, without it
        except UpstreamError as exc:
            attempt.verdict = classify_exception(exc)
        finally:
            self._health.end(route)
        seconds = self._clock() - attempt.started
        await self._health.record(
            route, attempt.verdict, prior=prior, seconds=seconds, headroom=attempt.headroom
        )
        self._count(attempt, seconds)
        await self._charge(attempt)
        if attempt.streamed is None:
            attempts.append(self._record_of(attempt))

    async def _exchange(
        self, attempt: Try, attempts: list[Attempt], sink: StreamSink, *, ask_usage: bool
    ) -> bool:
        """False when the upstream refused the usage ask and nothing else happened."""
        call, route = attempt.call, attempt.route
        timeouts = self._timeouts
        budget = attempt.budget - (self._clock() - attempt.started)
        head_timeout = min(timeouts.first_byte, budget)
        provider = PROVIDERS.get(route.key.provider)
        translator = translator_for(route.key.provider, call.operation)
        response: UpstreamResponse | TranslatedResponse
        if translator is not None:
            ask_usage = False  # a translation asks for usage itself
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
                _body_for(call, route, ask_usage=ask_usage),
                headers,
                head_timeout=head_timeout,
            )
        try:
            attempt.status = status = response.status
            attempt.headroom = provider.headroom(response.headers) if provider else None
            content_type = response.headers.get("content-type", "application/json")
            if call.stream and status == 200 and content_type.startswith("text/event-stream"):
                await self._open_stream(attempt, response, attempts, sink)
                return True
            body = await response.read(min(timeouts.idle, budget))
            if ask_usage and self._usage_request.refused(route.key, status, body):
                return False
            attempt.verdict = classify_response(status, response.headers, body)
            ok = attempt.verdict.failure is FailureClass.OK
            if not ok:
                body = _without_key(body, route)
            attempt.answer = Answer(
                status,
                body,
                content_type,
                route,
                attempts,
                attempt.model.name,
                usage_from_body(body) if ok else None,
            )
            return True
        finally:
            response.finish()

    async def _open_stream(
        self,
        attempt: Try,
        response: UpstreamResponse | TranslatedResponse,
        attempts: list[Attempt],
        sink: StreamSink,
    ) -> None:
        """Wait for the first content event; hand the stream to the sink if it is good."""
        elapsed = self._clock() - attempt.started
        first_timeout = min(self._timeouts.first_byte, attempt.budget) - elapsed
        first = await read_first_event(response, attempt.call.dialect, first_timeout)
        attempt.verdict = first.error or OK
        if attempt.verdict.failure is FailureClass.OK:
            attempts.append(self._record_of(attempt))
            end = await sink(attempt.route, response, first.buffer, attempts)
            attempt.streamed = Streamed(attempt.route, attempts, attempt.model.name, end)
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
            attempts,
            attempt.model.name,
        )

    def _count(self, attempt: Try, seconds: float) -> None:
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
    def _usage_of(attempt: Try) -> Usage | None:
        if attempt.streamed is not None:
            return attempt.streamed.end.usage
        return attempt.answer.usage if attempt.answer is not None else None

    async def _charge(self, attempt: Try) -> None:
        """The answer's cost from the provider's usage and the route's price."""
        done = attempt.streamed or attempt.answer
        usage = self._usage_of(attempt)
        price = attempt.route.price
        if done is None or usage is None or price is None:
            return
        done.cost_usd = price.cost(usage.input_tokens, usage.output_tokens)
        self._metrics.route_series(attempt.model.name, attempt.route).spend.inc(done.cost_usd)
        if attempt.route.key.budget is not None or attempt.model.budget is not None:
            await self._budgets.spend(attempt.route, attempt.model, done.cost_usd)

    def _record_of(self, attempt: Try) -> Attempt:
        return Attempt(
            route_id=attempt.route.id,
            model=attempt.model.name,
            failure=attempt.verdict.failure,
            status=attempt.status,
            seconds=self._clock() - attempt.started,
            detail=attempt.verdict.message[:200],
        )


def _without_key(body: bytes, route: Route) -> bytes:
    """Some providers echo the key in an error; such a body must not reach the client."""
    secret = route.key.api_key.encode()
    return body.replace(secret, b"[redacted]") if secret and secret in body else body


def _body_for(call: Call, route: Route, *, ask_usage: bool) -> bytes:
    """The client's bytes untouched when the upstream model name is the same and no
    usage is asked for."""
    body = call.body
    if call.payload.get("model") != route.model:
        body = with_model(body, call.payload, route.model)
    if ask_usage:
        body = with_usage_requested(body, call.payload)
    return body
