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
import random
import time
from dataclasses import dataclass, field, replace

import structlog

from router.attempts import AttemptRunner, Try
from router.budgets import BudgetKeeper
from router.calls import Answer, Call, Streamed, StreamSink
from router.context_window import PromptSize
from router.errors import DeadlineExceeded, InvalidRequest, NoCapacity
from router.health import HealthTracker
from router.metrics import Metrics
from router.policy import plan, unavailability
from router.providers import PROVIDERS, Operation
from router.translate import translator_for
from router.types import Attempt, Config, FailureClass, ModelSpec, Route
from router.upstream import Upstream

log = structlog.get_logger("router.failover")

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
        self._metrics = metrics
        self._rng = rng
        self._attempts = AttemptRunner(config.timeouts, health, upstream, metrics, budgets)
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
            attempt = Try(call, model, route, started=time.perf_counter(), budget=remaining)
            await self._attempts.run(attempt, snapshot[route.id], walk.attempts, sink)
            if attempt.streamed is not None:
                return attempt.streamed
            failure = attempt.verdict.failure
            if not failure.fails_over:
                if (
                    failure is FailureClass.CONTEXT_TOO_LONG
                    and self._config.models[model.name].context_fallback
                ):
                    return _TOO_LONG  # the provider said so: the context fallback takes it
                return attempt.answer
            if failure is FailureClass.EXCEEDS_TPM:
                walk.tpm_answer = attempt.answer
            log.info(
                "failover",
                model=call.model.name,
                route=route.id,
                failure=failure.value,
                status=attempt.status,
                retry_after=attempt.verdict.retry_after,
                detail=attempt.verdict.message[:200],
            )
        return None

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


__all__ = ["Failover"]
