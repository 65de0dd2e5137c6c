"""Work that may hang (a disk, a network mount) on a thread of its own.

asyncio.to_thread() runs work on the loop's default executor, whose threads are joined
when the process exits: a write to a hung disk, or a read of a file on a mount that
stopped answering, then holds the exit forever, past any drain timeout. A daemon thread
is not waited for. The caller bounds its own wait (asyncio.timeout); the work itself
may go on in the background until it ends or the process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_daemon_thread(work: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`work()` on a daemon thread; its result or exception in the future returned."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the waiter gave up (cancelled)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except Exception as exc:  # handed to the waiter
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
