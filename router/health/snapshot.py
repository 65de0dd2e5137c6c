"""In-process state that survives a restart: saved to a file, loaded at start.

`state: {backend: memory, snapshot: PATH}`. Cooldowns, disabled keys, open circuits,
budget spend and the last reported headroom are written to PATH every few seconds and
at shutdown, atomically (a temporary file in the same directory, then a rename: a crash
mid-write leaves the previous snapshot whole), and read at start. What a snapshot holds
is "seconds left" as of its wall-clock time; at load, the time since then is taken off
and whatever has run out is dropped. So a key whose daily budget was spent stays out
after a restart, and a cooldown that ended while the router was down is gone.

The breaker's counts and latency averages are not kept: they describe the last few
seconds, which a restart has already ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import structlog

from router.daemon_thread import in_daemon_thread
from router.files import read_regular
from router.health import read_back
from router.health.memory import LiveState, MemoryStore
from router.outcomes import BlockReason

log = structlog.get_logger("router.state")

SAVE_EVERY = 10.0  # seconds between saves; a crash loses at most this much
CLOSE_SECONDS = 5.0  # the last save's wait at shutdown, at most (a hung disk)
# 300,000 scopes' state is about 11 MB; a file past this is not one the router wrote.
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
_VERSION = 1


class SnapshotStore(MemoryStore):
    def __init__(
        self,
        path: str,
        clock: Callable[[], float],
        *,
        wall: Callable[[], float] = time.time,
        every: float | None = None,
    ) -> None:
        super().__init__(clock)
        self._path = Path(path)
        self._wall = wall
        self._every = SAVE_EVERY if every is None else every
        self._unsaved: str | None = None  # why the last save failed; None once one works
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # the latest save's write

    def start(self) -> None:
        self._load()
        self._task = asyncio.create_task(self._save_forever(), name="state-snapshot")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._save(final=True)  # at shutdown: what the last requests did
        except TimeoutError:  # a hung disk must not hold the exit
            log.warning(
                "state_snapshot_failed",
                path=str(self._path),
                error=f"the last save did not finish in {CLOSE_SECONDS:g} s",
            )
        await super().close()

    async def _save_forever(self) -> None:
        while True:
            # The first save at once: a path it cannot write is said from the start
            # (/readyz, the gauge), not only after the first interval.
            await self._save()
            await asyncio.sleep(self._every)

    async def _save(self, *, final: bool = False) -> None:
        """The state as of now, written by a thread: a slow disk's write and fsync
        (seconds, on a loaded node) must not hold up the requests on the loop. A daemon
        thread (daemon_thread.py): a hung disk must not hold the process's exit. While
        an earlier write has not finished, a periodic save is skipped and the store is
        degraded; the `final` one at shutdown waits for it (close() bounds the wait)."""
        live = self.live()
        document = {
            "version": _VERSION,
            "saved_at": self._wall(),
            "blocks": [[scope, _most(left), reason.value] for scope, left, reason in live.blocks],
            "headroom": [[scope, asdict(h), _most(left)] for scope, h, left in live.headroom],
            "totals": [[name, total, _most(left)] for name, total, left in live.totals],
        }
        if self._writing is not None and not self._writing.done():
            if not final:
                self._unsaved = "the state snapshot's last write has not finished (a hung disk?)"
                log.warning("state_snapshot_failed", path=str(self._path), error=self._unsaved)
                return
            # A save a cancel left writing (shutdown): it ends first, or its older state
            # could replace this one's file after it.
            await asyncio.wait([self._writing])
        writing = self._writing = in_daemon_thread(
            lambda: self._write(document), "state-snapshot-write"
        )
        writing.add_done_callback(self._written)
        # asyncio.wait() cancels nothing: a cancel leaves the thread's write whole. A
        # periodic save waits an interval at most, so that a write that hangs leaves
        # the loop to say so next time.
        await asyncio.wait([writing], timeout=None if final else self._every)

    def _written(self, writing: asyncio.Future[None]) -> None:
        """Every write's outcome, whenever it ends: a full disk or a read-only mount
        must not stop serving, and is said; a write that works clears what was said."""
        if writing.cancelled():
            return
        error = writing.exception()
        if error is None:
            self._unsaved = None
            return
        log.warning("state_snapshot_failed", path=str(self._path), error=str(error))
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        self._unsaved = f"the state snapshot cannot be written: {reason}"

    def degraded(self) -> str | None:
        """Why the last save failed (a full disk, a read-only mount): the replica serves,
        but what it learned would not survive a restart. /readyz and
        `llm_router_state_store_degraded` say so, and the alert on it fires."""
        return self._unsaved

    def _write(self, document: dict[str, Any]) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # mkdir's word for a file where the directory should be
            raise NotADirectoryError(0, "the snapshot's directory is a file") from None
        handle, temporary = tempfile.mkstemp(
            dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(document, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _load(self) -> None:
        try:
            data = read_regular(self._path, MAX_SNAPSHOT_BYTES)
        except FileNotFoundError:
            return  # a first start
        except OSError as exc:  # a FIFO, a device, a directory, too large, no access
            log.warning(
                "state_snapshot_unreadable",
                path=str(self._path),
                error=exc.strerror or str(exc),
                detail="starting with empty state",
            )
            return
        try:
            # Any damage is an unreadable snapshot, never a router that does not start:
            # bytes that are not UTF-8, JSON nested past the parser's recursion, a top
            # level that is not an object. orjson refuses nesting past 1,024 levels
            # without recursing: the stdlib's parser recursed to Python's limit, where
            # the garbage collector could run other objects' finalizers, which failed.
            state = _parsed(orjson.loads(data), self._wall())
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.warning(
                "state_snapshot_unreadable",
                path=str(self._path),
                error=f"{type(exc).__name__}: {exc}",
                detail="starting with empty state",
            )
            return
        self.restore(state)
        log.info(
            "state_snapshot_loaded",
            path=str(self._path),
            blocks=len(state.blocks),
            totals=len(state.totals),
        )


def _parsed(document: object, now: float) -> LiveState:
    """A snapshot's state as of `now`; ValueError for a value no router writes (an
    infinite wait in a hand-edited or damaged file blocked a route for ever)."""
    if not isinstance(document, dict):
        raise ValueError(f"the top level is a {type(document).__name__}, not an object")
    if document.get("version") != _VERSION:
        raise ValueError(f"snapshot version {document.get('version')!r}, expected {_VERSION}")
    saved_at = float(document["saved_at"])
    if not math.isfinite(saved_at):
        raise ValueError(f"saved_at: {document['saved_at']!r}")
    elapsed = max(now - saved_at, 0.0)
    blocks = [
        (str(scope), _left(left) - elapsed, BlockReason(reason))
        for scope, left, reason in document["blocks"]
    ]
    headroom = [
        (str(scope), read_back.headroom(fields), _left(left) - elapsed)
        for scope, fields, left in document["headroom"]
    ]
    totals = [
        (str(name), read_back.amount(total), _left(left) - elapsed)
        for name, total, left in document["totals"]
    ]
    return LiveState(
        [block for block in blocks if block[1] > 0],
        [entry for entry in headroom if entry[2] > 0],
        [total for total in totals if total[2] > 0],
    )


def _most(left: float) -> float:
    """What a snapshot keeps of a duration: at most read_back.MAX_STATE_SECONDS (a
    `key_disable` set longer would make the file one no load takes)."""
    return min(left, read_back.MAX_STATE_SECONDS)


def _left(value: object) -> float:
    """A saved duration: a finite number over 0, taken as at most MAX_STATE_SECONDS (one
    written by an earlier version may be longer); ValueError for anything else."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 0 < value < math.inf:
        return read_back.seconds_left(min(value, read_back.MAX_STATE_SECONDS))
    raise ValueError(f"not a duration: {value!r}")
