"""Writing one SSE answer, healthy or broken on purpose, and waiting out a silent client.

Every event is written with its own `await resp.write(...)` so that a client sees chunks
arrive one by one, the way a real upstream delivers them (provider-signals.md §9). What
the events say is the wire format's `StreamEncoder`; how many of them go out is the plan's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from router.sim.state import KeyStats
from router.sim.wire_format import StreamEncoder

# How a stream ends: `done` is the healthy ending (the encoder's closing events, e.g.
# finish chunk, optional usage, [DONE]); `cut` closes the TCP connection without them;
# `error` sends the encoder's error event and ends the body cleanly but without a
# terminator; `stall` goes silent.
Ending = Literal["done", "cut", "error", "stall"]

# How often a silent handler checks whether its client left. With handler_cancellation
# aiohttp cancels it sooner; the poll covers apps run without it.
_DISCONNECT_POLL = 0.05


@dataclass(frozen=True, slots=True)
class StreamPlan:
    pieces: list[str]
    chunk_delay: float
    ending: Ending = "done"
    after_chunks: int = 0


async def wait_for_disconnect(request: web.Request, shutting_down: Callable[[], bool]) -> bool:
    """Return True once the client has gone, False if the server is shutting down first."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        if shutting_down():
            return False
        await asyncio.sleep(_DISCONNECT_POLL)


def drop_connection(request: web.Request) -> None:
    # close() (not abort()) flushes chunks already written, then sends FIN: the client gets
    # a body that stops mid-way, without the final zero-length chunk.
    transport = request.transport
    if transport is not None:
        transport.close()


async def hold_silent(
    request: web.Request, stats: KeyStats, shutting_down: Callable[[], bool]
) -> None:
    """Say nothing until the client leaves (cancelled) or the server stops (dropped)."""
    if await wait_for_disconnect(request, shutting_down):
        stats.cancelled += 1
    else:
        drop_connection(request)
        stats.dropped += 1


async def write_stream(
    request: web.Request,
    headers: dict[str, str],
    encoder: StreamEncoder,
    plan: StreamPlan,
    stats: KeyStats,
    shutting_down: Callable[[], bool],
) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    stats.served += 1
    try:
        for event in encoder.opening():
            await resp.write(event)
        pieces = plan.pieces if plan.ending == "done" else plan.pieces[: plan.after_chunks]
        for piece in pieces:
            if plan.chunk_delay:
                await asyncio.sleep(plan.chunk_delay)
            await resp.write(encoder.content(piece))
        await _finish(request, resp, encoder, plan, stats, shutting_down)
    except ConnectionError:
        # The client closed the socket while we wrote and aiohttp did not cancel us first.
        stats.cancelled += 1
    return resp


async def _finish(
    request: web.Request,
    resp: web.StreamResponse,
    encoder: StreamEncoder,
    plan: StreamPlan,
    stats: KeyStats,
    shutting_down: Callable[[], bool],
) -> None:
    match plan.ending:
        case "done":
            if plan.chunk_delay:
                await asyncio.sleep(plan.chunk_delay)
            for event in encoder.closing():
                await resp.write(event)
            await resp.write_eof()
            stats.streams_completed += 1
        case "cut":
            drop_connection(request)
            stats.dropped += 1
        case "error":
            await resp.write(encoder.error())
            await resp.write_eof()
        case "stall":
            await hold_silent(request, stats, shutting_down)
