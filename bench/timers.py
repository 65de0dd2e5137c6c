"""What a deadline costs: the router's timing wheel against a plain loop timer.

    python bench/timers.py [--deadlines 200000] [--rounds 8]

Every upstream attempt sets two deadlines (the response head, then the body's reads)
and nearly always cancels them unfired. This sets and cancels that many of each kind on
uvloop, interleaved over rounds, and prints the least CPU per deadline of each (the
least is the figure least disturbed by other work on a shared machine). Set the
difference beside `bench/cpu.py`'s CPU per request to see what the wheel is worth.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import uvloop

from router.upstream.deadlines import Deadlines


class _LoopTimer:
    """A plain-timer deadline with the same surface (`fired`, `cancel()`)."""

    __slots__ = ("_expire", "_handle", "fired")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float, expire: Callable[[], None]):
        self._expire = expire
        self.fired = False
        self._handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self._expire()

    def cancel(self) -> None:
        self._handle.cancel()


def _noop() -> None:
    return None


async def _wheel(count: int) -> float:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(count):
        deadlines.at(loop.time() + 60.0, _noop).cancel()
    used = time.process_time() - started
    deadlines.close()
    return used / count


async def _timer(count: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(count):
        _LoopTimer(loop, loop.time() + 60.0, _noop).cancel()
    return (time.process_time() - started) / count


async def _measure(count: int, rounds: int) -> None:
    best = {"wheel": float("inf"), "loop timer": float("inf")}
    for _ in range(rounds):
        best["wheel"] = min(best["wheel"], await _wheel(count))
        best["loop timer"] = min(best["loop timer"], await _timer(count))
        await asyncio.sleep(0)  # let the loop drop the cancelled handles
    for name, seconds in best.items():
        print(f"{name:10s} {seconds * 1e6:5.2f} us CPU per deadline set and cancelled")
    saved = 2 * (best["loop timer"] - best["wheel"]) * 1e6
    print(f"the wheel saves {saved:.2f} us per attempt (two deadlines)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deadlines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    uvloop.run(_measure(args.deadlines, args.rounds))


if __name__ == "__main__":
    main()
