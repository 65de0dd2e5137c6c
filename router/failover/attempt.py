"""One attempt: send a call to one route, read or open its answer, learn from it.

The upstream is reached byte for byte when the route's provider speaks the client's API
and through `translate/` when it does not; either way the answer is classified, the
health tracker records it, and metrics and cost are counted here, once per attempt.
A complete answer is settled before `run` returns; an open stream is settled when the
handler leaves its `async with`, however the stream ended.
Durations are real time (perf_counter); the injected clock belongs to health state.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from router.errors import InvalidRequest, UpstreamError
from router.failover.call import Answer, Call
from router.failover.first_event import read_first_event
from router.failover.homes import ResponseHomes
from router.failover.open_stream import OpenStream, Sent
from router.failover.outgoing import body_for, headers_for, key_redaction
from router.failover.usage_ask import UsageRequest
from router.health.budgets import BudgetKeeper
from router.health.tracker import HealthTracker
from router.outcomes import Attempt, FailureClass, Headroom, Verdict
from router.rules.failures import ACTIONS, OK, classify_exception, classify_response
from router.rules.plan import RouteHealth
from router.telemetry.metrics import Metrics
from router.types import Limits, ModelSpec, Operation, Route, Timeouts
from router.upstream import Upstream
from router.upstream.providers import PROVIDERS, Provider
from router.upstream.translate import Response, Translator, translator_for
from router.wire.body import utf8_text
from router.wire.foreign_errors import in_client_shape
from router.wire.redact import Redactor
from router.wire.usage import Usage, usage_from_body


# Not frozen, as Sent is not (see failover/open_stream.py): built on every attempt.
@dataclass(slots=True)
class Outcome:
    """What one attempt came back with: its verdict, its record, and an answer or an
    open stream (neither when it failed before any answer, a timeout say)."""

    verdict: Verdict
    record: Attempt
    answer: Answer | None = None
    stream: OpenStream | None = None


_SSE = "text/event-stream"
_RESPONSES, _OK = Operation.RESPONSES, FailureClass.OK
# The APIs whose `stream: true` answers are events (embeddings ignore the field).
_STREAMED = frozenset({Operation.CHAT, Operation.MESSAGES, Operation.RESPONSES})
_EVENT_STARTS = (b"data:", b"event:", b":")
_NOT_A_STREAM = "the upstream answered a stream request with a whole body, not an event stream"


def _as_stream(verdict: Verdict, body: bytes) -> Verdict:
    """The verdict on a whole 2xx body for a request that asked for a stream: events
    under another media type are relayed whole, as they came; a whole answer (an
    upstream that ignores `stream`) would give the client no event and no error, so
    another route is tried."""
    if body.lstrip().startswith(_EVENT_STARTS):
        return OK
    if verdict.failure is OK.failure:
        return Verdict(failure=FailureClass.SERVER_ERROR, message=_NOT_A_STREAM)
    return verdict


def _event_stream(content_type: str) -> bool:
    """A media type is case-insensitive: `Text/Event-Stream` is one too."""
    return content_type.startswith(_SSE) or content_type[:17].lower() == _SSE


@dataclass(slots=True)
class _Reply:
    """One exchange with the upstream, as read: a complete body or an opened stream."""

    verdict: Verdict
    status: int | None = None
    headroom: Headroom | None = None
    body: bytes | None = None  # None: no answer to pass on (a read failed, say)
    content_type: str = "application/json"
    usage: Usage | None = None
    opened: tuple[Response, bytes] | None = None  # the stream and its bytes read so far


class AttemptRunner:
    def __init__(
        self,
        timeouts: Timeouts,
        health: HealthTracker,
        upstream: Upstream,
        metrics: Metrics,
        budgets: BudgetKeeper,
        limits: Limits,
        redactor: Redactor,
        homes: ResponseHomes | None = None,
    ) -> None:
        """`redactor` knows the configured secrets: no error body, error event or
        failure message from an upstream leaves an attempt without passing it. `homes`
        learns which route gave each Responses answer (failover/homes.py)."""
        self._homes = homes if homes is not None else ResponseHomes()
        self._timeouts = timeouts
        self._max_event = limits.max_event_bytes
        self.redactor = redactor
        self._health = health
        self._upstream = upstream
        self._metrics = metrics
        self._usage_request = UsageRequest()
        self._budgets = budgets
        self._clock = time.perf_counter

    async def run(
        self,
        call: Call,
        model: ModelSpec,
        route: Route,
        prior: RouteHealth,
        *,
        budget: float,
        earlier: tuple[Attempt, ...],
    ) -> Outcome:
        """Send `call` to `route` within `budget` seconds. `earlier`: this request's
        attempts so far, for the answer's record of them."""
        started = self._clock()
        self._health.begin(route, prior)
        handed_over = False
        try:
            try:
                translator = translator_for(route.key.provider, call.operation)
                # A translation asks for usage itself; a passthrough asks where the key allows.
                ask_usage = translator is None and self._usage_request.wanted(call, route.key)
                reply = await self._exchange(call, route, translator, started, budget, ask_usage)
                if reply is None:
                    # The upstream refused only the usage ask the router added, not the
                    # client's request: send it again as the client wrote it
                    # (failover/usage_ask.py).
                    reply = await self._exchange(call, route, translator, started, budget, False)
                    assert reply is not None  # only a body that asked can be refused for it
            except UpstreamError as exc:
                reply = _Reply(classify_exception(exc))
            reply.verdict = self._redacted(reply.verdict)
            record = self._record(model, route, reply.verdict, reply.status, started)
            sent = Sent(model, route, prior, started, reply.headroom)
            if call.operation is _RESPONSES and reply.verdict.failure is _OK:
                answer = reply.opened[1] if reply.opened is not None else reply.body
                self._homes.remember(answer or b"", route.id)
            if reply.opened is not None:
                upstream, first = reply.opened
                stream = OpenStream(
                    self, sent, upstream, first, (*earlier, record), call.dialect, self._max_event
                )
                handed_over = True
                return Outcome(reply.verdict, record, None, stream)
        finally:
            if not handed_over:
                self._health.end(route)
        # "Token counting and message creation have separate and independent rate
        # limits" (Anthropic's token-counting docs): a count's 429 says nothing of the
        # key's Messages, so counts fail over but teach health nothing.
        judged = not call.counting
        cost = await self._settle(sent, reply.verdict, reply.usage, judged=judged)
        answer = None
        if reply.body is not None:
            attempts = (*earlier, record)
            # Positional here and below, in the fields' order: a class called with keywords
            # gets them as a dict (CPython 3.11), which more than doubles its cost.
            answer = Answer(
                reply.status, reply.body, reply.content_type, route, attempts, model.name,
                reply.usage, cost,
            )  # fmt: skip
        return Outcome(reply.verdict, record, answer)

    async def settle_stream(self, stream: OpenStream) -> None:
        """Called once, as the stream's `async with` is left."""
        end = stream.end
        assert end is not None
        self._health.end(stream.route)
        # A stream the client left before its end says nothing about the route, good
        # or bad, nor one the router's own bound on its length ended: health learns
        # nothing from them. Their tokens, if reported, are still paid.
        # Nothing moves on from a stream whose answer began: no failover is counted.
        stream.cost_usd = await self._settle(
            stream.sent, self._redacted(end.verdict), end.usage,
            judged=end.judged and not end.client_gone, moves_on=False,
        )  # fmt: skip

    def _redacted(self, verdict: Verdict) -> Verdict:
        """`verdict` with its upstream message redacted, whole, before anything (a
        record's detail, a log field) cuts it short: half a key no longer matches."""
        if not verdict.message:
            return verdict  # an answer that went well: nothing to redact
        message = self.redactor.scrub(verdict.message)
        return (
            verdict if message is verdict.message else dataclasses.replace(verdict, message=message)
        )

    async def _settle(
        self,
        sent: Sent,
        verdict: Verdict,
        usage: Usage | None,
        *,
        judged: bool = True,
        moves_on: bool = True,
    ) -> float | None:
        """Record the attempt in health (when `judged`) and metrics (a failover when its
        failure `moves_on` to the next route); charge and return its cost."""
        route, model = sent.route, sent.model
        seconds = self._clock() - sent.started
        failure = verdict.failure
        if judged and ACTIONS[failure].judges_route:
            await self._health.record(
                route, verdict, prior=sent.prior, seconds=seconds, headroom=sent.headroom
            )
        series = self._metrics.route_series(model.name, route)
        series.attempts[failure].inc(1)
        series.upstream_seconds.observe(seconds)
        if moves_on and ACTIONS[failure].fails_over:
            series.failovers[failure].inc(1)
        if usage is None:
            return None
        series.tokens_in.inc(usage.input_tokens)
        if usage.cached_tokens:
            series.cache_read.inc(usage.cached_tokens)
        if usage.written_tokens:
            series.cache_write.inc(usage.written_tokens)
        output = usage.output_tokens
        if output is not None:
            series.tokens_out.inc(output)
        if route.price is None:
            return None
        # A stream cut before its output was counted (Anthropic's): its input, which the
        # provider bills whatever came of it, is charged as the least it cost; the cost
        # returned, for the log, is unknown.
        cost = route.price.cost(
            usage.input_tokens, output or 0, usage.cached_tokens, usage.written_tokens
        )
        series.spend.inc(cost)
        if route.key.budget is not None or model.budget is not None:
            await self._budgets.spend(route, model, cost)
        return cost if output is not None else None

    async def _exchange(
        self,
        call: Call,
        route: Route,
        translator: Translator | None,
        started: float,
        budget: float,
        ask_usage: bool,
    ) -> _Reply | None:
        """One request to the upstream; None when it refused the usage ask."""
        timeouts = route.timeouts or self._timeouts  # the route's own, merged at load
        left = budget - (self._clock() - started)
        provider = PROVIDERS.get(route.key.provider)
        # Conditionals, not min()/max(): a builtin call with its argument parsing costs
        # ten times the comparison (about 750 instructions on 3.11), on every attempt.
        head_timeout = timeouts.first_byte if timeouts.first_byte < left else left
        response = await self._open(call, route, translator, provider, head_timeout, ask_usage)
        handed_over = False
        status = response.status
        headroom = provider.headroom(response.headers) if provider else None
        try:
            content_type = response.headers.get("content-type", "application/json")
            if call.stream and status == 200 and _event_stream(content_type):
                first_byte = timeouts.first_byte if timeouts.first_byte < budget else budget
                first_timeout = first_byte - (self._clock() - started)
                buffer, data, error = await read_first_event(
                    response, call.dialect, first_timeout, self._max_event, self.redactor
                )
                if error is None:
                    handed_over = True
                    reply = _Reply(OK, status, headroom)
                    reply.opened = (response, buffer)  # not a keyword: see Answer in run()
                    return reply
                # Nothing is committed yet: an error event that is not ours to fail over
                # (the request's own fault) goes back as a plain error answer.
                status = 400 if ACTIONS[error.failure].caller_fault else 502
                return _Reply(error, status, headroom, body=data)
            # `idle` between its bytes, and the request's deadline in all.
            body = await response.read(timeouts.idle if timeouts.idle < left else left, left)
            if not (content_type.isascii() and content_type.isprintable()):
                # A byte that is no header text (kept as a surrogate by the upstream
                # client) would fail or be mangled in the client's answer head.
                content_type = "application/json"
            if ask_usage and self._usage_request.refused(route.key, status, body):
                return None
            verdict = classify_response(status, response.headers, body)
            if call.stream and 200 <= status < 300 and call.operation in _STREAMED:
                verdict = _as_stream(verdict, body)
            ok = verdict.failure is OK.failure  # not FailureClass.OK: see rules/failures.py
            if ok:
                # An upstream may echo the key it was sent into an answer too (a debug
                # server, a proxy): that key never reaches the client.
                body = key_redaction(route, call.dialect).answer(body)
                return _Reply(verdict, status, headroom, body, content_type, usage_from_body(body))
            # Some providers echo the key in an error: redacted (escaped forms too)
            # before the client or the log sees the body, or the verdict's message.
            clean = self.redactor.scrub_bytes(body)
            if clean is not body:
                body = clean
                verdict = classify_response(status, response.headers, body)
            if translator is not None and status >= 400:
                # Written in the other API's shape: the client gets its own.
                body = in_client_shape(call.dialect, status, body, verdict.failure)
                content_type = "application/json"
            return _Reply(verdict, status, headroom, body, content_type, None)
        except UpstreamError as exc:  # after the head: its status and headroom still count
            return _Reply(classify_exception(exc), status, headroom)
        finally:
            if not handed_over:
                response.finish()

    def _open(
        self,
        call: Call,
        route: Route,
        translator: Translator | None,
        provider: Provider | None,
        head_timeout: float,
        ask_usage: bool,
    ) -> Awaitable[Response]:
        """The sending of the request, to await: a plain function, not a coroutine of its
        own around the client's (one coroutine less per attempt)."""
        if translator is not None:
            if not utf8_text(call.body, call.payload):
                # litellm sends UTF-8 and cannot; the client's escape is not its to mend.
                raise InvalidRequest(
                    "the request holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                    "escape), which cannot be sent to this route's provider",
                    "invalid_body",
                )
            return translator.send(
                route, call.operation, call.payload, stream=call.stream, head_timeout=head_timeout
            )
        assert provider is not None  # config accepts only known or litellm providers
        return self._upstream.send(
            route,
            provider.url(route.key, call.operation, route.model),
            body_for(call, route, ask_usage=ask_usage),
            headers_for(call, route.key, provider),
            head_timeout=head_timeout,
        )

    def _record(
        self, model: ModelSpec, route: Route, verdict: Verdict, status: int | None, started: float
    ) -> Attempt:
        seconds, detail = self._clock() - started, verdict.message[:200]
        return Attempt(route.id, model.name, verdict.failure, status, seconds, detail, started)
