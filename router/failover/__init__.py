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
from dataclasses import replace

import structlog

from router.errors import DeadlineExceeded, InvalidRequest, NoCapacity, OutOfLocalResources
from router.failover.attempt import AttemptRunner, Outcome
from router.failover.call import Answer, Call, Walked
from router.failover.capable import CapableRoutes
from router.failover.exhausted import no_capacity
from router.failover.homes import ResponseHomes
from router.failover.open_stream import OpenStream
from router.failover.prompt import PromptSize
from router.failover.skips import skip_notes
from router.failover.waiting import Patience, Ticket, WaitRoom
from router.health.tracker import HealthTracker, HealthView
from router.outcomes import Attempt, BlockReason
from router.rules.choice import Layout, choose, layout
from router.rules.failures import ACTIONS, Next
from router.rules.plan import Unavailable, plan, unavailability
from router.telemetry.metrics import Metrics
from router.types import Config, ModelSpec, Operation, Route

log = structlog.get_logger("router.failover")
# Module constants, not enum class attributes, on the request path: see router/outcomes.py.
_STOP, _CONTEXT_FALLBACK = Next.STOP, Next.CONTEXT_FALLBACK
_RESPONSES = Operation.RESPONSES
_MAX_ROUTE_SETS = 4096  # layouts kept (the config's route sets, per model and operation)
_NONE: frozenset[str] = frozenset()  # one empty set: frozenset() makes a new one each call


class _Walk:
    """One request's walk: what every round shares (the attempts, the routes passed over),
    and what each round starts afresh (`next_round`)."""

    __slots__ = (
        "attempts",
        "circuit_open",
        "deadline",
        "fallen_back",
        "first",
        "home",
        "kept_answer",
        "panic",
        "prompt",
        "skipped",
        "ticket",
        "too_big",
        "tried",
        "unfit",
        "visited",
    )

    def __init__(self, prompt: PromptSize, deadline: float) -> None:
        self.prompt = prompt
        self.deadline = deadline  # loop time
        self.attempts: list[Attempt] = []  # the walk's own; answers get a tuple
        self.fallen_back: set[str] = set()  # fallback models entered
        self.skipped: dict[str, Unavailable] = {}  # passed over, and why: the log
        # The head of its model's line, once it waited: left once an attempt is sent.
        self.ticket: Ticket | None = None
        self.first = 0  # attempts made in earlier rounds: max_attempts is per round
        self.home = ""  # the route that gave the answer a Responses follow-up names
        self.visited: set[str] = set()  # models walked in this round
        self.too_big: frozenset[str] = _NONE  # skipped: the prompt exceeds their window
        # The same, of the model being walked: not chosen. A route's window is its entry's
        # (routes.yaml may set max_input_tokens per entry), so the id a prompt is too big
        # for under one model may still hold it under another.
        self.unfit: frozenset[str] = _NONE
        self.tried: set[str] = set()
        self.kept_answer: Answer | None = None  # returned if every attempt ends the way it did
        self.circuit_open = False  # a route was skipped for its open circuit: worth a probe
        self.panic = False  # this pass probes open circuits (plan(panic=True))

    def next_round(self, ticket: Ticket) -> None:
        """After a wait: every route may be tried again, max_attempts afresh."""
        self.ticket = ticket
        self.first = len(self.attempts)
        self.visited = set()
        self.too_big = self.unfit = _NONE
        self.tried = set()
        self.kept_answer = None
        self.circuit_open = False
        self.panic = False


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
        room: WaitRoom,
        homes: ResponseHomes | None = None,
    ) -> None:
        """`room`: where requests wait for capacity, and `homes`: the routes of stored
        Responses answers (failover/homes.py), the process's (one for every config)."""
        self._homes = homes if homes is not None else ResponseHomes()
        self._home_routes: dict[int, dict[str, Route]] = {}  # per route set: by id
        self._config = config
        self._health = health
        self._attempts = attempts
        self._metrics = metrics
        self._rng = rng
        self._room = room
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
        model = call.model
        deadline = loop.time() + (model.timeouts or self._config.timeouts).request
        walk = _Walk(PromptSize(call.body, call.payload.get("messages")), deadline)
        if call.operation is _RESPONSES:
            walk.home = self._homes.home(call.payload.get("previous_response_id"))
        patience: Patience | None = None
        try:
            if self._room.busy(model.name) and self._max_wait(call) > 0:
                patience = self._patience(call, deadline)
                walk.ticket = await patience.queue()
            while True:
                try:
                    result = await self._round(call, walk)
                    break
                except NoCapacity as exc:
                    if not exc.limited or exc.retry_after is None or self._max_wait(call) <= 0:
                        raise
                    if patience is None:
                        patience = self._patience(call, deadline)
                    walk.next_round(await patience.wait_out(exc))
        except (NoCapacity, DeadlineExceeded, OutOfLocalResources) as exc:
            exc.waited = 0.0 if patience is None else patience.waited
            exc.skipped = skip_notes(walk.skipped, walk.attempts)
            raise
        except asyncio.CancelledError as exc:
            # The client left, or the drain cut the request, mid-walk: what it tried and
            # waited goes up with the cancellation, for its log line (endpoint.py), as
            # the metrics already counted them.
            exc.walked = Walked(  # type: ignore[attr-defined]
                tuple(walk.attempts),
                0.0 if patience is None else patience.waited,
                skip_notes(walk.skipped, walk.attempts),
            )
            raise
        finally:
            if patience is not None and patience.waited > 0:
                self._metrics.waits.labels(model.name).inc()
                self._metrics.wait_seconds.labels(model.name).observe(patience.waited)
        if patience is not None:
            result.waited = patience.waited
        result.skipped = skip_notes(walk.skipped, walk.attempts)
        return result

    def _max_wait(self, call: Call) -> float:
        """How long `call` may wait for capacity, over all its rounds: none for a count
        (the handler estimates it at once instead)."""
        if call.counting:
            return 0.0
        wait = call.model.max_wait
        return self._config.failover.max_wait if wait is None else wait

    def _patience(self, call: Call, deadline: float) -> Patience:
        assert self._loop is not None  # run() set it
        name = call.model.name
        gauge = self._metrics.waiting.labels(name)
        return Patience(self._room, name, self._max_wait(call), deadline, self._loop.time, gauge)

    async def _round(self, call: Call, walk: _Walk) -> Answer | OpenStream:
        """One walk of the chain: the answer or stream, or NoCapacity and friends."""
        try:
            result = await self._walk_chain(call, walk)
            if result is None and walk.circuit_open:
                # Nothing else could serve: probe the open circuits now rather than refuse
                # (Envoy's panic threshold); a short outage then ends with the upstream's.
                walk.visited.clear()
                walk.panic = True
                result = await self._walk_chain(call, walk)
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
            raise await no_capacity(
                call, walk.attempts, self._config.models, self._capable, self._health
            )
        finally:
            if walk.ticket is not None:  # the round ended before sending: the next goes
                self._room.leave(walk.ticket)
                walk.ticket = None

    async def _walk_chain(self, call: Call, walk: _Walk) -> Answer | OpenStream | None:
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
                too_big: frozenset[str] = _NONE
            else:
                too_big = await walk.prompt.too_big_for(routes)
            walk.too_big |= too_big
            walk.unfit = too_big
            if too_big and len(too_big) == len(routes) and model.context_fallback:
                pending[:0] = model.context_fallback  # no route can hold this prompt
                continue
            outcome = await self._walk_model(call, model, shape, walk)
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
        self, call: Call, model: ModelSpec, shape: Layout, walk: _Walk
    ) -> Outcome | None:
        """Try the routes of `shape`, each chosen when the last failed over: the first
        outcome that does not fail over, or None when no route (or attempt) is left."""
        loop = self._loop
        assert loop is not None  # run() set it
        while len(walk.attempts) - walk.first < self._config.failover.max_attempts:
            remaining = walk.deadline - loop.time()
            if remaining <= 0:
                seconds = (call.model.timeouts or self._config.timeouts).request
                raise DeadlineExceeded(
                    f"request deadline of {seconds:g}s passed after {len(walk.attempts)} attempts",
                    tuple(walk.attempts),
                )
            health = self._health.view(shape.routes)
            route = self._pick(call, model, shape, health, walk)
            if route is None:
                return None
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

    def _pick(
        self, call: Call, model: ModelSpec, shape: Layout, health: HealthView, walk: _Walk
    ) -> Route | None:
        """The next route of `shape` to try, or None when none is available; the routes
        passed over go into the walk's log, with why. Tried routes are not chosen again,
        nor those of this model the prompt is too big for."""
        exclude = walk.tried | walk.unfit if walk.unfit else walk.tried
        if walk.home and walk.home not in exclude:
            # A Responses follow-up: first the route its stored answer is on, if it can.
            home = self._home_route(shape, walk.home)
            if home is not None and unavailability(home, health[home.id], call.need_tokens) is None:
                return home
        affinity = call.affinity if model.affinity else b""
        if not walk.panic:
            route, passed = choose(
                model, shape, health, self._rng, need_tokens=call.need_tokens,
                exclude=exclude, affinity=affinity,
            )  # fmt: skip
            for blocked in passed:  # none, nearly always
                walk.skipped.setdefault(blocked.route.id, blocked)
            if route is not None:
                return route
        # Nothing available: every route's reason, or a panic round.
        planned = plan(
            model, health, self._rng, need_tokens=call.need_tokens, exclude=exclude,
            routes=shape.routes, panic=walk.panic, affinity=affinity,
        )  # fmt: skip
        for blocked in planned.unavailable:
            walk.skipped.setdefault(blocked.route.id, blocked)
        if planned.routes:
            return planned.routes[0]
        if not walk.circuit_open:
            walk.circuit_open = any(
                u.reason is BlockReason.CIRCUIT_OPEN for u in planned.unavailable
            )
        return None

    def _home_route(self, shape: Layout, route_id: str) -> Route | None:
        """The route of `shape` with `route_id`, from a table built once per route set."""
        table = self._home_routes.get(id(shape.routes))
        if table is None:
            table = {route.id: route for route in shape.routes}
            if len(self._home_routes) < _MAX_ROUTE_SETS:
                self._home_routes[id(shape.routes)] = table
        return table.get(route_id)

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


__all__ = ["Failover"]
