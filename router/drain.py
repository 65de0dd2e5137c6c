"""Signals and shutdown: SIGHUP reloads; SIGTERM or SIGINT drains; a second one exits.

Drain, in order: /readyz answers 503 at once (the load balancer takes the replica out);
the listener keeps accepting for `server.drain_grace` seconds (endpoints are removed
while requests still arrive), then closes; requests and streams in flight get
`server.drain_timeout` seconds to finish; the router then ends those still running: a
stream with an error event in its client's dialect and a clean end of the body, any
other request with a 503 (endpoint.py, `RequestTrace.cut`); a whole answer already
being written to a slow reader is cut where it is (logged 503). A second signal at
any point skips what is left and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import structlog
from aiohttp import web

from router.front_door import FrontDoor
from router.handlers.state import REQUEST_TRACE, Current

log = structlog.get_logger("router.server")

# After the cut, seconds the handlers get to write their error event or answer.
CUT_GRACE = 5.0
# How often the drain looks at what is still in flight (only while draining).
_POLL = 0.05


class Signals:
    """SIGINT/SIGTERM counted (the first drains, the second exits); SIGHUP calls
    `on_hangup`, or is logged and ignored when there is none (its default action would
    end the process and every stream in it)."""

    def __init__(self, on_hangup: Callable[[], None] | None = None) -> None:
        self.stop = asyncio.Event()
        self.now = asyncio.Event()  # the second stop signal: exit at once
        self._on_hangup = on_hangup
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stop)
        with contextlib.suppress(NotImplementedError, AttributeError):  # no SIGHUP on Windows
            loop.add_signal_handler(signal.SIGHUP, self._hangup)

    def _stop(self) -> None:
        (self.now if self.stop.is_set() else self.stop).set()

    def _hangup(self) -> None:
        if self._on_hangup is not None:
            self._on_hangup()
            return
        log.warning(
            "sighup_ignored",
            detail="the router does not reload its config on SIGHUP here; restart it to apply "
            "changes",
        )


async def drain(runner: web.AppRunner, door: FrontDoor, current: Current, signals: Signals) -> None:
    """From the first stop signal to the point where the runner may be cleaned up."""
    started = time.monotonic()
    current.draining = True
    server = current.state.config.server
    log.info(
        "draining",
        in_flight=len(door.in_flight()),
        drain_grace=server.drain_grace,
        drain_timeout=server.drain_timeout,
    )
    cut = 0
    forced = await _until(signals.now, server.drain_grace)
    if not forced:
        for site in list(runner.sites):
            await site.stop()  # no new connections
        door.pre_shutdown()  # idle ones close now, busy ones after their answer
        forced = await _until(signals.now, server.drain_timeout, door)
    if not forced and door.in_flight():
        cut = _cut(door)
        forced = await _until(signals.now, CUT_GRACE, door)
    log.info(
        "stopped",
        cut=cut,
        abandoned=len(door.in_flight()) if forced else 0,  # a second signal: ended unanswered
        forced=forced,
        seconds=round(time.monotonic() - started, 3),
    )


async def _until(now: asyncio.Event, seconds: float, door: FrontDoor | None = None) -> bool:
    """Wait `seconds`, or with `door`, until nothing is in flight; True if the second
    signal came first."""
    deadline = time.monotonic() + seconds
    while not now.is_set():
        left = deadline - time.monotonic()
        if left <= 0 or (door is not None and not door.in_flight()):
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left if door is None else min(left, _POLL)):
                await now.wait()
    return True


def _cut(door: FrontDoor) -> int:
    """End every request still in flight: its handler is cancelled and, seeing
    `trace.cut`, answers or ends its stream itself."""
    requests = door.in_flight()
    for request in requests:
        trace = request.get(REQUEST_TRACE)
        if trace is not None:
            trace.cut = True
        request.task.cancel()
    return len(requests)
