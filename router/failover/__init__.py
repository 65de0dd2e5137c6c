"""The attempt loop: the requested model's routes, then its fallback chain.

    for model in [requested, *fallback chain]:
        for route in choose(model, health.view()):               # chosen again after each try
            outcome = attempts.run(call, route)                  # settled, or an open stream
            ACTIONS[outcome.verdict.failure].next: answer | next route | context fallback
    again, with plan(panic=True), when a route was skipped only for its open circuit
    raise NoCapacity   # 429 + Retry-After when rate-limited, 503 when routes are down
    ... unless rate limited and back within max_wait: wait in the model's line, walk again

`max_attempts` and the per-request deadline bound the whole walk. The walk returns a
value, an `Answer` or an `OpenStream`, and never touches the client's response.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace

import structlog

from router.errors import DeadlineExceeded, InvalidRequest, NoCapacity, OutOfLocalResources
from router.failover.attempt import AttemptRunner, Outcome
from router.failover.call import Answer, Call
from router.failover.capable import CapableRoutes
from router.failover.open_stream import OpenStream
from router.failover.prompt import PromptSize
from router.failover.skips import skip_notes
from router.failover.waiting import Ticket, WaitRoom
from router.health.tracker import HealthTracker
from router.rules.choice import Layout, choose, layout
from router.rules.failures import ACTIONS, Next
from router.rules.plan import Unavailable, plan, unavailability
from router.telemetry.metrics import Metrics
from router.types import (
    Attempt,
    BlockReason,
    Config,
    FailureClass,
    ModelSpec,
    Operation,
    Route,
)

log = structlog.get_logger("router.failover")
# Module constants, not enum class attributes, on the request path: see router/types.py.
_STOP, _CONTEXT_FALLBACK = Next.STOP, Next.CONTEXT_FALLBACK
_MIN_WAIT = 0.01  # a recovery due now still sleeps this long: no busy loop
_MAX_ROUTE_SETS = 4096  # layouts kept (the config's route sets, per model and operation)


@dataclass(slots=True)
class _Walk:
    # The fields a round starts with first: it is built positionally (see Call).
    prompt: PromptSize
    attempts: list[Attempt]  # the walk's own; answers get a tuple
    first: int  # attempts made in earlier rounds (before a wait): max_attempts is per round
    fallen_back: set[str]  # fallback models entered
    ticket: Ticket | None  # the head of its model's line: left once an attempt is sent
    skipped: dict[str, Unavailable]  # passed over, and why: the log
    visited: set[str] = field(default_factory=set)
    too_big: frozenset[str] = frozenset()  # routes skipped: the prompt exceeds their window
    tried: set[str] = field(default_factory=set)
    kept_answer: Answer | None = None  # returned if every attempt ends the way it did
    circuit_open: bool = False  # a route was skipped for its open circuit: worth a probe


class Failover:
    """The walk over routes and fallbacks. Durations are real time (loop time); the
    injected clock belongs to the health state alone."""

    def __init__(
        self,
        config: Config,
        health: HealthTracker,
        attempts: AttemptRunner,
        metrics: Metrics,
        *,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._health = health
        self._attempts = attempts
        self._metrics = metrics
        self._rng = rng
        self._room = WaitRoom(config.failover.max_waiting)
        self._layouts: dict[int, Layout] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the router's, on first run()
        models = config.models
        self._capable = CapableRoutes(models)  # per request's needs: the routes that can serve
        # (model, operation) pairs whose chain has a route for it: fixed at load.
        self._served = frozenset(
            (model.name, operation)
            for model in models.values()
            for operation in Operation
            if any(models[name].routes_for[operation] for name in model.chain)
        )
        # Models whose requests route affinity has a choice for: some model they may go
        # to (the chain, its context fallbacks) keeps it on and has more than one route.
        self._choosing = frozenset(
            model.name
            for model in models.values()
            if any(
                models[name].affinity and len(models[name].routes) > 1
                for name in (*model.chain, *model.context_fallback)
            )
        )

    async def run(self, call: Call) -> Answer | OpenStream:
        """The answer, or a stream to relay: nothing has gone to the client yet.

        When every route of the chain is rate limited and the earliest recovers within
        the model's max_wait (and the deadline), the request waits in its model's line
        and goes again; the waits of all its rounds together stay within max_wait."""
        loop = self._loop
        if loop is None:  # kept: get_running_loop() is a getpid() syscall on 3.11
            loop = self._loop = asyncio.get_running_loop()
        started = loop.time()
        model = call.model
        deadline = started + (model.timeouts or self._config.timeouts).request
        max_wait = self._config.failover.max_wait if model.max_wait is None else model.max_wait
        if call.counting:
            max_wait = 0.0  # no waiting for a count: the handler estimates it here at once
        prompt = PromptSize(call.body, call.payload.get("messages"))
        attempts: list[Attempt] = []
        fallen_back: set[str] = set()
        skipped: dict[str, Unavailable] = {}
        waited = 0.0
        ticket: Ticket | None = None
        seq = -1
        holding_since: float | None = None  # set while held: a cancelled wait counts too
        try:
            if max_wait > 0 and self._room.busy(model.name):
                # Earlier requests wait for this model: behind them, not past them.
                seq = self._room.arrival()
                holding_since = started
                ticket = await self._hold(model.name, seq, 0.0, min(max_wait, deadline - started))
                waited, holding_since = loop.time() - started, None
            while True:
                walk = _Walk(prompt, attempts, len(attempts), fallen_back, ticket, skipped)
                try:
                    result = await self._round(call, walk, deadline)
                    break
                except NoCapacity as exc:
                    now = loop.time()
                    wait = exc.retry_after
                    if not exc.limited or wait is None or max_wait <= 0:
                        raise
                    wait = max(wait, _MIN_WAIT)
                    bound = min(max_wait - waited, deadline - now)
                    if wait > bound:
                        raise  # longer than the request may wait: 429 at once
                    if seq < 0:
                        seq = self._room.arrival()
                    holding_since = now
                    ticket = await self._hold(model.name, seq, wait, bound)
                    waited, holding_since = waited + loop.time() - now, None
                    if ticket is None:  # the room is full, or the line took too long
                        exc.retry_after = max(0.0, wait - (loop.time() - now))
                        raise
        except (NoCapacity, DeadlineExceeded, OutOfLocalResources) as exc:
            exc.waited = waited
            exc.skipped = skip_notes(skipped, attempts)
            raise
        finally:
            if holding_since is not None:  # the client left while waiting
                waited += loop.time() - holding_since
            if waited > 0:
                self._metrics.waits.labels(model.name).inc()
                self._metrics.wait_seconds.labels(model.name).observe(waited)
        result.waited = waited
        result.skipped = skip_notes(skipped, attempts)
        return result

    async def _hold(self, model: str, seq: int, seconds: float, bound: float) -> Ticket | None:
        gauge = self._metrics.waiting.labels(model)
        gauge.inc()
        try:
            return await self._room.hold(model, seq, seconds, bound)
        finally:
            gauge.dec()

    async def _round(self, call: Call, walk: _Walk, deadline: float) -> Answer | OpenStream:
        """One walk of the chain: the answer or stream, or NoCapacity and friends."""
        try:
            result = await self._walk_chain(call, walk, deadline)
            if result is None and walk.circuit_open:
                # Nothing else could serve: probe the open circuits now rather than refuse
                # (Envoy's panic threshold); a short outage then ends with the upstream's.
                walk.visited.clear()
                result = await self._walk_chain(call, walk, deadline, panic=True)
            if result is not None:
                return result
            if walk.kept_answer is not None and all(
                ACTIONS[a.failure].answer_when_all for a in walk.attempts
            ):
                # No key can take a request this large: say so as the provider did.
                return replace(walk.kept_answer, attempts=tuple(walk.attempts))
            if walk.too_big and not walk.attempts:
                raise InvalidRequest(
                    f"the prompt (about {walk.prompt.estimate} tokens) is longer than the "
                    f"context window of every route of {' -> '.join(call.model.chain)}",
                    "context_length_exceeded",
                )
            raise await self._exhausted(call, walk.attempts)
        finally:
            if walk.ticket is not None:  # the round ended before sending: the next goes
                self._room.leave(walk.ticket)
                walk.ticket = None

    async def _walk_chain(
        self, call: Call, walk: _Walk, deadline: float, *, panic: bool = False
    ) -> Answer | OpenStream | None:
        """The requested model, then its fallbacks: the first answer or stream, or None
        when every route of the chain is unavailable or failed over."""
        pending = list(call.model.chain)
        while pending:
            model = self._config.models[pending.pop(0)]
            if model.name in walk.visited:
                continue
            walk.visited.add(model.name)
            if model.budget is not None and await self._health.model_block(model.name):
                continue  # over its budget: its fallbacks serve until the period turns
            routes = self._capable.of(model, call.operation, call.needs)
            if not routes:
                continue  # none can serve this request (its API, tools, images): its fallbacks
            shape = self._layout(routes)
            # A prompt too long for a window can still be counted: that is how a
            # client finds out it must shorten it.
            if call.counting or walk.prompt.fits(shape.min_window):
                too_big: frozenset[str] = frozenset()
            else:
                too_big = await walk.prompt.too_big_for(routes)
            walk.too_big |= too_big
            if too_big and len(too_big) == len(routes) and model.context_fallback:
                pending[:0] = model.context_fallback  # no route can hold this prompt
                continue
            outcome = await self._walk_model(call, model, shape, too_big, walk, deadline, panic)
            if outcome is None:
                continue  # no route of this model left: its fallbacks
            if outcome.stream is not None:
                return outcome.stream
            next_step = ACTIONS[outcome.verdict.failure].next
            if next_step is _STOP:
                log.error(
                    "local_resource_exhausted",
                    route=outcome.record.route_id,
                    detail=outcome.verdict.message[:200],
                )
                raise OutOfLocalResources(
                    f"{outcome.verdict.message[:200]}; not the upstream's fault, retry shortly",
                    tuple(walk.attempts),
                )
            if next_step is _CONTEXT_FALLBACK and model.context_fallback:
                pending[:0] = model.context_fallback  # the provider said so: the fallback takes it
                continue
            assert outcome.answer is not None  # only an upstream's answer is passed on
            return outcome.answer
        return None

    async def _walk_model(
        self,
        call: Call,
        model: ModelSpec,
        shape: Layout,
        too_big: frozenset[str],
        walk: _Walk,
        deadline: float,
        panic: bool,
    ) -> Outcome | None:
        """Try the routes of `shape`, each chosen when the last failed over: the first
        outcome that does not fail over, or None when no route (or attempt) is left."""
        loop = self._loop
        assert loop is not None  # run() set it
        routes = shape.routes
        while len(walk.attempts) - walk.first < self._config.failover.max_attempts:
            remaining = deadline - loop.time()
            if remaining <= 0:
                seconds = (call.model.timeouts or self._config.timeouts).request
                raise DeadlineExceeded(
                    f"request deadline of {seconds:g}s passed after {len(walk.attempts)} attempts",
                    tuple(walk.attempts),
                )
            health = self._health.view(routes)
            exclude = walk.tried | too_big if too_big else walk.tried
            affinity = call.affinity if model.affinity else b""
            route = None
            if not panic:
                route, passed = choose(
                    model, shape, health, self._rng, need_tokens=call.need_tokens,
                    exclude=exclude, affinity=affinity,
                )  # fmt: skip
                for blocked in passed:  # none, nearly always
                    walk.skipped.setdefault(blocked.route.id, blocked)
            if route is None:  # nothing available: every route's reason, or a panic round
                planned = plan(
                    model, health, self._rng, need_tokens=call.need_tokens, exclude=exclude,
                    routes=routes, panic=panic, affinity=affinity,
                )  # fmt: skip
                for blocked in planned.unavailable:
                    walk.skipped.setdefault(blocked.route.id, blocked)
                if not planned.routes:
                    if not walk.circuit_open:
                        walk.circuit_open = any(
                            u.reason is BlockReason.CIRCUIT_OPEN for u in planned.unavailable
                        )
                    return None
                route = planned.routes[0]
            if model.name != call.model.name and model.name not in walk.fallen_back:
                walk.fallen_back.add(model.name)
                self._metrics.fallbacks.labels(call.model.name, model.name).inc()
            walk.tried.add(route.id)
            if walk.ticket is not None:  # sent: the next waiter of this model may go
                self._room.leave(walk.ticket)
                walk.ticket = None
            outcome = await self._attempts.run(
                call, model, route, health[route.id], budget=remaining,
                earlier=tuple(walk.attempts),
            )  # fmt: skip
            walk.attempts.append(outcome.record)
            verdict = outcome.verdict
            action = ACTIONS[verdict.failure]
            if not action.fails_over:
                return outcome
            if action.answer_when_all and outcome.answer is not None:
                walk.kept_answer = outcome.answer
            log.info(
                "failover",
                model=call.model.name,
                route=route.id,
                failure=verdict.failure.value,
                status=outcome.record.status,
                retry_after=verdict.retry_after,
                detail=verdict.message[:200],
            )
        return None

    def _layout(self, routes: tuple[Route, ...]) -> Layout:
        """The route set's tiers, built once: route sets are the config's own tuples,
        keyed by identity (hashing a tuple of a thousand routes costs O(routes))."""
        cached = self._layouts.get(id(routes))
        if cached is not None and cached.routes is routes:
            return cached
        shape = layout(routes)
        if len(self._layouts) < _MAX_ROUTE_SETS:
            self._layouts[id(routes)] = shape
        return shape

    def serves(self, model: ModelSpec, operation: Operation) -> bool:
        """Whether any model of the chain has a route for `operation`."""
        return (model.name, operation) in self._served

    def chooses(self, model: ModelSpec) -> bool:
        """Whether route affinity has a choice to make for `model`'s requests: otherwise
        the conversation's key is not worth hashing (a model with one key)."""
        return model.name in self._choosing

    async def _exhausted(self, call: Call, attempts: list[Attempt]) -> NoCapacity:
        """Why nothing could serve: limited (429, wait for the earliest recovery) or down;
        raises the 400 when no route of the chain has what the request needs."""
        refusal = self._capable.refusal(call.model, call.operation, call.needs)
        if refusal is not None:
            raise refusal
        limited_waits: list[float] = []
        down_waits: list[float] = []
        for name in call.model.chain:
            routes = self._capable.of(self._config.models[name], call.operation, call.needs)
            snapshot = await self._health.snapshot(routes)
            for route in routes:
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
        spent = [
            name
            for name in call.model.chain
            if self._config.models[name].budget is not None
            and await self._health.model_block(name) is BlockReason.BUDGET
        ]
        if spent:  # skipped whole, before any route: say why, or nothing would
            message += f"; over its budget until the period turns: {', '.join(spent)}"
        if attempts:
            tries = ", ".join(f"{a.route_id}: {a.failure.value}" for a in attempts)
            message += f" (attempts: {tries})"
        return NoCapacity(
            message, attempts=tuple(attempts), limited=limited, retry_after=retry_after
        )


__all__ = ["Failover"]
