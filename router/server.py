"""The aiohttp application and the serve loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from router.client_connection import ClientTimeouts
from router.config import is_loopback
from router.drain import Signals, drain
from router.errors import ConfigError
from router.failover.waiting import WaitRoom
from router.front_door import FrontDoor, Runner, connection_cap
from router.handlers import admin, ops
from router.handlers.body_room import BODY_ROOM, BodyRoom, BodyRoomMetrics
from router.handlers.count_tokens import count_tokens
from router.handlers.endpoint import (
    ClientAuth,
    Handler,
    continue_if_accepted,
    endpoint,
    not_found,
    refuse_expectation,
)
from router.handlers.host_check import HostCheck
from router.handlers.model_api import PATHS, model_api
from router.handlers.models_list import asker_dialect, get_model, list_models
from router.handlers.reload import RELOADER, reload_config
from router.handlers.restore import restore_key
from router.handlers.state import APP_STATE, Current
from router.health.budgets import BudgetKeeper, LiveBudgets, start_recheck
from router.health.memory import MemoryStore
from router.health.snapshot import SnapshotStore
from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.reload import Reloader, Shared, build_state
from router.telemetry.logs import request_log
from router.telemetry.metrics import Metrics
from router.telemetry.tracing import start_tracing
from router.types import Config, Operation
from router.upstream import translate
from router.upstream.client import HttpClient
from router.upstream.providers import PROVIDERS
from router.upstream.resolver import Resolver
from router.upstream.translate import answer_limits
from router.wire.dialects import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES

log = structlog.get_logger("router.server")


def create_app(
    config: Config,
    *,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    store: StateStore | None = None,
    registry: CollectorRegistry | None = None,
    wall: Callable[[], float] = time.time,
    config_path: str | Path | None = None,
) -> web.Application:
    """The router as an aiohttp app; `clock`, `rng`, `store` and the metrics `registry`
    are injectable for tests. `config_path`: the file a reload reads again."""
    app = web.Application(client_max_size=config.server.max_body_bytes)
    state_store = store if store is not None else state_store_for(config, clock, wall)
    health = HealthTracker(state_store, config.failover, clock)
    registry = registry if registry is not None else process_registry()
    metrics = Metrics(registry, config)
    # Of the process, as the listener and its settings are: a reload keeps it.
    room = app[BODY_ROOM] = BodyRoom(config.server.max_body_bytes_total)
    registry.register(BodyRoomMetrics(room))

    async def upstream_session(app: web.Application) -> AsyncIterator[None]:
        state_store.start()
        client = HttpClient(limits=config.limits)
        answer_limits.set_limits(config.limits)  # litellm's clients read within them too
        tracing = start_tracing(config.traces)  # None unless asked for: no otel import
        shared = Shared(
            store=state_store,
            client=client,
            metrics=metrics,
            request_log=request_log(),  # after configure_logging(): its stream and format
            rng=rng if rng is not None else random.Random(),
            wall=wall,
            room=WaitRoom(config.failover.max_waiting),
            budgets=LiveBudgets(config),
            tracing=tracing,
        )
        current = app[APP_STATE] = Current(build_state(config, health, shared))
        app[RELOADER] = Reloader(config_path, current, shared)
        # Before the listener opens: budget blocks the state came with, against this config.
        keeper = BudgetKeeper(state_store, health, shared.budgets, wall=wall)
        rechecking = await start_recheck(keeper, lambda: current.state.config)
        warming = None
        if needs_translation(config):
            # litellm takes seconds to import: warm it in a thread now, not on a request.
            warming = asyncio.create_task(translate.preload(), name="litellm-preload")
        yield
        for task in (rechecking, warming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await translate.shutdown()
        if tracing is not None:
            await tracing.shutdown()  # what is queued goes out, within a bound
        shared.close()
        client.close()
        await state_store.close()

    app.cleanup_ctx.append(upstream_session)
    add_routes(
        app, ClientAuth(config.server.client_keys), HostCheck(config.server), operator_auth(config)
    )
    return app


def process_registry() -> CollectorRegistry:
    """A registry with the process's own metrics (RSS, CPU, open fds, GC) for the
    dashboard: each collector once per registry."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def state_store_for(
    config: Config, clock: Callable[[], float], wall: Callable[[], float] = time.time
) -> StateStore:
    state = config.state
    if state.backend == "redis":
        from router.health.redis_store import RedisStore  # imports redis-py: only when asked

        # Its host looked up as the upstreams' are, off the pool every lookup shares: a
        # Redis name that does not resolve held up litellm's lookups (redis_connection.py).
        return RedisStore(
            MemoryStore(clock), state.url, state.prefix, clock, open_socket=Resolver().open_socket
        )
    if state.snapshot:
        return SnapshotStore(state.snapshot, clock, wall=wall)
    return MemoryStore(clock)


def operator_auth(config: Config) -> ClientAuth | None:
    """Who may read /metrics, /admin, /status and /admin/routes (key names, spend, route
    state): with server.admin_keys, one of them, for all four; without, the client keys
    guard the admin pages (as they guard /v1) and /metrics stays open for scrapers,
    which is what None means here."""
    if config.server.admin_keys:
        return ClientAuth(config.server.admin_keys, "server.admin_keys")
    return None


def add_routes(
    app: web.Application, auth: ClientAuth, hosts: HostCheck, operator: ClientAuth | None = None
) -> None:
    apis = [
        (Operation.CHAT, OPENAI_CHAT),
        (Operation.EMBEDDINGS, OPENAI_CHAT),  # errors as OpenAI's; never streamed
        (Operation.RESPONSES, OPENAI_RESPONSES),
        (Operation.MESSAGES, ANTHROPIC_MESSAGES),
        (Operation.COUNT_TOKENS, ANTHROPIC_MESSAGES),
    ]
    known: dict[str, frozenset[str]] = {}

    def add(method: str, path: str, handler: Handler, checked: bool = True, **options: Any) -> None:
        guard = hosts if checked else None
        wrapped = endpoint(handler, hosts=guard, **options)
        if method == "POST":
            refusal = endpoint(refuse_expectation, hosts=guard, **options)
            expect = continue_if_accepted(
                guard, options.get("auth"), refusal, options.get("bodies")
            )
            app.router.add_route(method, path, wrapped, expect_handler=expect)
        else:
            app.router.add_route(method, path, wrapped)
        known[path] = known.get(path, frozenset()) | {method}

    room = app[BODY_ROOM]
    for operation, dialect in apis:
        handler = model_api(operation, dialect, room)
        if operation is Operation.COUNT_TOKENS:
            handler = count_tokens(handler, room)  # counted here when no route counts upstream
        add(
            "POST", PATHS[operation], handler,
            auth=auth, counted=True, dialect=dialect, bodies=room,
        )  # fmt: skip
    # Both SDKs ask for the models: each reads its errors (a 401 too) in its own shape.
    add("GET", "/v1/models", list_models, auth=auth, dialect_of=asker_dialect)
    # Probes carry no key, and come from the pod's or container's address: every Host
    # may ask. Scrapers carry a key only when server.admin_keys asks for one; people
    # looking at /admin do (operator_auth).
    # HEAD too: uptime checkers and some load balancers probe with it.
    for method in ("GET", "HEAD"):
        add(method, "/healthz", ops.healthz, checked=False)
        add(method, "/readyz", ops.readyz, checked=False)
    add("GET", "/metrics", ops.metrics_page, auth=operator)
    for path, page in (("/admin", admin.status_page), ("/status", admin.status_page),
                       ("/admin/routes", admin.routes_json)):  # fmt: skip
        add("GET", path, page, auth=operator or auth)
    add("POST", "/admin/reload", reload_config, auth=operator or auth)
    add("POST", "/admin/restore", restore_key, auth=operator or auth)
    # After every plain path: fast_paths.py serves those up to the first one with a
    # variable. A model name may hold a slash.
    add("GET", "/v1/models/{model:.+}", get_model, auth=auth, dialect_of=asker_dialect)
    # Anthropic's clients read errors in Anthropic's shape: unknown paths under theirs too.
    messages = not_found(known, hosts, dialect=ANTHROPIC_MESSAGES)
    app.router.add_route("*", "/v1/messages{tail:(?:/.*)?}", messages)
    # Anywhere else, the shape of the SDK that asked: a wrong method on /v1/models (which
    # both call), a path of Anthropic's the router does not serve (/v1/files).
    app.router.add_route("*", "/{tail:.*}", not_found(known, hosts, dialect_of=asker_dialect))


def needs_translation(config: Config) -> bool:
    """Whether a key's provider is reached only through litellm (gemini, mistral, ...).
    A key the router speaks to itself (openai, azure, anthropic) loads litellm on the
    first request that needs translation instead (an OpenAI client on an Anthropic key,
    an Anthropic client on an OpenAI key): its passthrough never pays litellm's memory
    (README "Install")."""
    return any(
        key.provider not in PROVIDERS
        and translate.translator_for(key.provider, Operation.CHAT) is not None
        for key in config.keys.values()
    )


def check_bind(config: Config, host: str) -> None:
    """Refuse an open router on a non-loopback address (a `--host` flag may override it)."""
    server = config.server
    if not is_loopback(host) and not server.client_keys and not server.allow_unauthenticated:
        raise ConfigError(
            f"refusing to listen on {host} without client auth: set server.client_keys, "
            "or server.allow_unauthenticated: true if something else guards this port"
        )


async def start(
    config: Config, host: str, port: int, *, shutdown_timeout: float = 60.0, **app_args: object
) -> Runner:
    """Listening on `host`:`port`. `shutdown_timeout`: seconds `runner.cleanup()` lets a
    handler still running finish before it cancels it (serve() drains first)."""
    check_bind(config, host)
    server = config.server
    if not is_loopback(host) and not server.client_keys and server.allowed_hosts is None:
        log.warning(
            "only_loopback_hosts_answered",
            detail=f"listening on {host} without client_keys, the router answers only "
            "requests addressed to a loopback name (403 host_not_allowed otherwise); "
            "list the names clients use in server.allowed_hosts",
        )
    # handler_cancellation: a client that hangs up cancels its handler, and with it
    # the upstream request, instead of letting a provider bill a generation nobody reads.
    runner = Runner(
        create_app(config, **app_args),  # type: ignore[arg-type]
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=config.server.idle_timeout,
        # After an answer that left its body unread (an early 413), what the client
        # still sends is read and dropped this long, as nginx's lingering_time: closing
        # on unread data would reset the connection before the client reads its answer.
        lingering_time=30.0,
        reading=ClientTimeouts(
            head=config.server.header_timeout,
            body=config.server.body_timeout,
            send=config.server.send_timeout,
        ),
        max_head=config.server.max_header_bytes,
        max_connections=connection_cap(config.server.max_connections),
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:  # the port is taken, the address is not this host's, ...
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return runner


def front_door(runner: web.AppRunner) -> FrontDoor:
    server = runner.server
    assert isinstance(server, FrontDoor), "start() makes the runner"
    return server


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the router is not listening")


async def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    config_path: str | Path | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, then drain (drain.py) and stop. SIGHUP reloads
    `config_path`."""
    host = host or config.server.host
    port = config.server.port if port is None else port
    open_files = raise_open_file_limit()
    # What the drain leaves running is ended by then: aiohttp's own wait is short.
    runner = await start(config, host, port, shutdown_timeout=1.0, config_path=config_path)
    tune_garbage_collector()
    log.info(
        "listening",
        url=f"http://{host}:{bound_port(runner)}/v1",
        open_files_limit=open_files,
        models=list(config.models),
        routes=len(config.all_routes()),
        client_auth=bool(config.server.client_keys),
        admin_auth=bool(config.server.admin_keys),
        max_connections=front_door(runner).max_connections,
    )
    app = runner.app
    hangups = asyncio.Event()
    reloading = asyncio.create_task(reload_on(hangups, app[RELOADER]), name="reload")
    signals = Signals(on_hangup=hangups.set)
    try:
        await signals.stop.wait()
        await drain(runner, front_door(runner), app[APP_STATE], signals)
    finally:
        reloading.cancel()
        await runner.cleanup()


async def reload_on(hangups: asyncio.Event, reloader: Reloader) -> None:
    """A reload for each run of SIGHUPs: those that come while one runs make one more,
    after it, which reads the file as it is then; not one each. A signal a second from
    a config-management loop queued a reload per signal, without bound."""
    while True:
        await hangups.wait()
        hangups.clear()
        try:
            await reloader.reload()
        except Exception:  # a bug: said, and the next SIGHUP still reloads
            log.exception("reload_crashed")


# Container allocations between young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic collections on the request path.

    Everything built at startup (modules, config, the app) lives as long as the
    process: `gc.freeze()` moves it out of the collector's scans. Requests leave about
    35 container objects each for the collector (cycles among tasks, futures and
    exceptions), so at CPython's default young threshold of 700 it ran once every 20
    requests, and a full collection two or three times per 5,000
    (python_gc_collections_total under bench load). At 20,000 it runs about once every
    600 requests, with the same RSS. Measured with bench/cpu.py: about 18 us less CPU
    per non-streaming request (see README "Performance").
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force
    (None: no limit, or no rlimits on this platform).

    Every client and upstream connection is a file descriptor, and the usual soft limit
    of 1,024 is a few hundred streams; the hard limit is what the administrator allows.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    # An unlimited hard limit is refused as a soft one beyond fs.nr_open (Linux) or
    # OPEN_MAX (macOS, 10,240).
    for target in (hard,) if hard != resource.RLIM_INFINITY else (_nr_open(), 10_240):
        if target is not None and target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                break
            except (ValueError, OSError):
                continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _nr_open() -> int | None:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return None


async def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM (the demo: nothing to drain). SIGHUP is logged and
    ignored: its default action would end the process."""
    await Signals().stop.wait()
