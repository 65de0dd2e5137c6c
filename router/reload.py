"""Reload: routes.yaml read again and applied between requests (SIGHUP, POST /admin/reload).

A new config gets a new RouterState (failover, attempts, budgets, redaction), swapped in
with one assignment: a request reads the state once, at its start, and finishes on the
config it began with. What outlives configs is built once per process (`Shared`): the
state store, the upstream connection pool, the metrics and the request log. Route and
key state carries over where the route's key (its provider, address and credential) and
upstream model are the same; removed routes, keys and models lose theirs.

Settings the running process cannot change (the listener, the front door, the client
pool's limits, the state backend) keep their old values; the answer and the log name
them as needing a restart, so none is ignored silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from router.config import load_config
from router.daemon_thread import in_daemon_thread
from router.errors import ConfigError
from router.failover import Failover
from router.failover.attempt import AttemptRunner
from router.failover.homes import ResponseHomes
from router.failover.waiting import WaitRoom
from router.handlers.state import Current, RouterState
from router.health.budgets import BudgetKeeper, LiveBudgets
from router.health.scopes import account_scope, route_scope
from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.telemetry.logs import RequestLog, redact_also
from router.telemetry.metrics import Metrics
from router.telemetry.tracing import Tracing
from router.types import Config, Key
from router.upstream import Upstream, translate
from router.upstream.client import HttpClient
from router.upstream.deadlines import Deadlines
from router.wire.redact import Redactor, config_secrets

log = structlog.get_logger("router.reload")

# Server settings a reload applies: read when the process starts to drain, not before.
_LIVE_SERVER_FIELDS = frozenset({"drain_grace", "drain_timeout"})
# Seconds a reload may take to read and parse routes.yaml (a hung mount: the error).
READ_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Shared:
    """What every config of one process uses."""

    store: StateStore
    client: HttpClient
    metrics: Metrics
    request_log: RequestLog
    rng: random.Random
    wall: Callable[[], float]
    # Of the config serving now, which a reload sets: the line for capacity (its limit),
    # and the budgets every request is charged against, the ones begun before included.
    room: WaitRoom
    budgets: LiveBudgets
    tracing: Tracing | None = None
    # Which route gave each stored Responses answer, for its follow-ups (failover/homes.py).
    homes: ResponseHomes = field(default_factory=ResponseHomes)
    # The upstream attempts' deadlines, of every config: cancelled at exit.
    deadlines: Deadlines = field(default_factory=Deadlines)

    def close(self) -> None:
        self.deadlines.close()


def build_state(config: Config, health: HealthTracker, shared: Shared) -> RouterState:
    upstream = Upstream(shared.client, config.timeouts, shared.deadlines)
    budgets = BudgetKeeper(shared.store, health, shared.budgets, wall=shared.wall)
    redactor = Redactor(config_secrets(config))
    attempts = AttemptRunner(
        config.timeouts, health, upstream, shared.metrics, budgets, config.limits, redactor,
        shared.homes,
    )  # fmt: skip
    failover = Failover(
        config, health, attempts, shared.metrics, rng=shared.rng, room=shared.room,
        homes=shared.homes,
    )  # fmt: skip
    return RouterState(
        config=config,
        health=health,
        failover=failover,
        metrics=shared.metrics,
        request_log=shared.request_log,
        state_store=shared.store,
        tracing=shared.tracing,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reload did: `error` set when the file was rejected (the old config serves)."""

    error: str | None = None
    models: tuple[str, ...] = ()
    added: tuple[str, ...] = ()  # route ids
    removed: tuple[str, ...] = ()
    kept: int = 0  # routes whose state carried over
    # Routes still there whose key changed account or secret: their state started over.
    reset: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()  # settings that changed but apply only at start

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"status": "rejected", "error": self.error}
        return {
            "status": "reloaded",
            "models": list(self.models),
            "routes_added": list(self.added),
            "routes_removed": list(self.removed),
            "routes_kept": self.kept,
            "routes_reset": list(self.reset),
            "needs_restart": list(self.needs_restart),
        }


class Reloader:
    """Reads `path` again on request; one reload at a time, and one read of the file at
    a time, even one a reload gave up on (`_blocked_read`)."""

    def __init__(self, path: str | Path | None, current: Current, shared: Shared) -> None:
        self._path = path
        self._current = current
        self._shared = shared
        self._lock = asyncio.Lock()
        # When the read of the file not yet returned started (time.monotonic), if one is.
        self._read_started: float | None = None

    @property
    def has_file(self) -> bool:
        return self._path is not None

    async def reload(self) -> Outcome:
        async with self._lock:
            if self._path is None:
                outcome = Outcome(error="this router was not started from a routes.yaml file")
            elif (blocked := self._blocked_read()) is not None:
                outcome = Outcome(error=blocked)
            else:
                path = self._path
                try:
                    # Parsing reads model data from disk: off the loop, requests go on;
                    # on a daemon thread, within a bound, as a hung mount must not hold
                    # every later reload (they queue on the lock) nor the exit.
                    async with asyncio.timeout(READ_SECONDS):
                        config = await asyncio.shield(self._start_read(path))
                except ConfigError as exc:
                    outcome = Outcome(error=exc.message)
                except TimeoutError:
                    outcome = Outcome(error=f"reading {path} took over {READ_SECONDS:g} s")
                else:
                    old = self._current.state.config
                    outcome = self._apply(config)
                    # litellm clients of keys gone or changed: closed once unused.
                    await translate.retire(self._current.state.config.keys.values())
                    keeper = BudgetKeeper(
                        self._shared.store,
                        self._current.state.health,
                        self._shared.budgets,
                        wall=self._shared.wall,
                    )
                    lifted = await keeper.rebudget(old, self._current.state.config)
                    if lifted:
                        log.info("budget_blocks_lifted", scopes=lifted)
        if outcome.error is not None:
            log.error("reload_failed", error=outcome.error, detail="the old config keeps serving")
        else:
            log.info("config_reloaded", **outcome.as_json())
            if outcome.needs_restart:
                log.warning(
                    "reload_needs_restart",
                    settings=list(outcome.needs_restart),
                    detail="these changed in routes.yaml but apply only when the router "
                    "starts; they keep their old values until a restart",
                )
        return outcome

    def _blocked_read(self) -> str | None:
        """Why no read may start: an earlier one, given up on after READ_SECONDS, is
        still blocked on its thread. Each reload that timed out on a hung mount would
        otherwise leave one more thread blocked there, without bound (reloads sent by a
        script or a ConfigMap watcher); the one still waiting shows when the mount answers."""
        if self._read_started is None:
            return None
        age = time.monotonic() - self._read_started
        return (
            f"the read of {self._path} started {age:.0f} s ago has not returned; "
            "not starting another"
        )

    def _start_read(self, path: str | Path) -> asyncio.Future[Config]:
        reading = in_daemon_thread(lambda: load_config(path), "reload-read")
        self._read_started = time.monotonic()
        reading.add_done_callback(self._read_returned)
        return reading

    def _read_returned(self, reading: asyncio.Future[Config]) -> None:
        self._read_started = None
        if not reading.cancelled():
            # Taken here, so that the error of a read no reload waits for any more is
            # not logged as never retrieved (a config it read is simply dropped).
            reading.exception()

    def _apply(self, new: Config) -> Outcome:
        redact_also(config_secrets(new))  # before anything logs a new key's secret
        old_state = self._current.state
        old = old_state.config
        config, needs_restart = effective(old, new)
        for warning in config.warnings:
            log.warning("config_warning", detail=warning)
        old_routes = {route.id: route for route in old.all_routes()}
        new_routes = {route.id: route for route in config.all_routes()}
        kept = [
            i for i, route in new_routes.items()
            if i in old_routes and _same_key(old_routes[i].key, route.key)
        ]  # fmt: skip
        kept_ids = set(kept)
        gone_routes = [route for i, route in old_routes.items() if i not in kept]
        gone_keys = [
            key for name, key in old.keys.items()
            if name not in config.keys or not _same_key(key, config.keys[name])
        ]  # fmt: skip
        removed_keys = [key for key in gone_keys if key.name not in config.keys]
        removed_models = [name for name in old.models if name not in config.models]
        self._shared.store.forget(
            [route_scope(route) for route in gone_routes]
            + [account_scope(key) for key in gone_keys]
            + [f"model:{name}" for name in removed_models],
            # Spend follows the key's or model's name: a new credential under the same
            # name keeps its budget's spend; a name gone takes it with it.
            totals=[f"spend:key:{key.name}:" for key in removed_keys]
            + [f"spend:model:{name}:" for name in removed_models],
        )
        old_state.health.retire(route.id for route in gone_routes)
        health = old_state.health.successor(config.failover, kept)
        # Routes and keys gone, or on another account (their state went with it): a
        # key replaced after a 401 no longer shows disabled, nor under its old provider.
        self._shared.metrics.reconfigure(config, gone_routes, gone_keys)
        self._shared.room.limit = config.failover.max_waiting
        self._shared.budgets.set(config)
        self._current.state = build_state(config, health, self._shared)  # the swap
        return Outcome(
            models=tuple(config.models),
            added=tuple(i for i in new_routes if i not in old_routes),
            removed=tuple(i for i in old_routes if i not in new_routes),
            kept=len(kept),
            reset=tuple(i for i in new_routes if i in old_routes and i not in kept_ids),
            needs_restart=needs_restart,
        )


def effective(old: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """`new` as this process can run it: the settings it reads only at start keep their
    old values; the names of those that differ."""
    changed = [
        f"server.{name}"
        for name in _field_names(old.server)
        if name not in _LIVE_SERVER_FIELDS
        and getattr(old.server, name) != getattr(new.server, name)
    ]
    sections = (("limits", "limits"), ("state", "state"), ("traces", "telemetry.traces"))
    for section, shown in sections:
        before, after = getattr(old, section), getattr(new, section)
        changed += [
            f"{shown}.{name}"
            for name in _field_names(before)
            if getattr(before, name) != getattr(after, name)
        ]
    server = dataclasses.replace(
        old.server, **{name: getattr(new.server, name) for name in _LIVE_SERVER_FIELDS}
    )
    config = dataclasses.replace(
        new, server=server, limits=old.limits, state=old.state, traces=old.traces
    )
    return config, tuple(changed)


def _field_names(settings: Any) -> Iterable[str]:
    return (field.name for field in dataclasses.fields(settings))


def _same_key(old: Key, new: Key) -> bool:
    """The same account (types.Key.account): a changed credential or address starts
    with clean state (a revoked key replaced in routes.yaml serves again at once, on
    every replica sharing Redis too), and so do changed `headers:` (an
    `OpenAI-Organization` or `OpenAI-Project` is another account, with its own limits
    and quota; a header that is not loses only the key's cooldowns)."""
    return old.account == new.account


__all__ = ["Outcome", "Reloader", "Shared", "build_state", "effective"]
