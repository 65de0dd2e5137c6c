"""The /metrics scrape at 2,000 routes: series, page size, scrape time, event-loop stall.

    PYTHONPATH=. python bench/metrics_scrape.py [--keys 100] [--models 20] [--scrapes 8]

Builds 100 keys x 20 models (every model on every key: 2,000 routes) against one
simulated provider, sends requests until every route has served one (the series every
route has after real traffic), gives every route a headroom report (the most state a
route can show), then scrapes /metrics `--scrapes` times and prints the series count,
the page size, the scrape's wall and CPU time (this process's, which holds the router:
its CPU during a scrape is the router rendering the page, plus reading it), the process
RSS, and the longest stall a 1 ms ticker task saw on the router's event loop during the
scrapes: what a request or stream in flight would have waited. The first scrape is
reported apart from the later ones: it creates every route's state and headroom gauges.
`--rounds` repeats all of it with a new router (the first scrape happens once per
router), for a median and a max of the first scrapes too. Run by hand (it is not part
of CI); the machine's other load shows in the wall times, less in CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import resource
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.config import parse_config  # noqa: E402
from router.handlers.state import APP_STATE  # noqa: E402
from router.health.tracker import route_scope  # noqa: E402
from router.outcomes import Headroom  # noqa: E402
from router.server import bound_port, start, tune_garbage_collector  # noqa: E402
from router.sim import SimKey, SimProvider  # noqa: E402
from tests.configs import model, route, routes_yaml, sim_keys  # noqa: E402


def build(keys: int, models: int, sim_url: str) -> tuple[str, list[str], list[SimKey]]:
    # Limits on every key, so every answer reports headroom (the most the page can hold).
    sims = [SimKey(f"k{i:03d}", f"sk-sim-bench-{i:06d}", rpm=10**6, tpm=10**9) for i in range(keys)]
    names = [f"m{j:02d}" for j in range(models)]
    document = routes_yaml(
        keys=sim_keys(sim_url, *sims),
        models={name: model(*(route(s.name, name) for s in sims)) for name in names},
    )
    return document, names, sims


class Ticker:
    """Wakes every millisecond and remembers, while `watching`, the longest it was late
    (wall time: what a request in flight waits, the machine's other load included) and
    the most CPU the loop's thread spent elsewhere between two wake-ups (the longest
    piece of work the loop ran: this process's own doing only)."""

    def __init__(self) -> None:
        self.watching = False
        self.worst = 0.0
        self.worst_cpu = 0.0

        self.gc_runs: list[tuple[int, float]] = []  # (generation, seconds) while watching
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.watching:
            self.gc_runs.append((info["generation"], time.perf_counter() - self._gc_started))

    def reset(self) -> None:
        self.watching, self.worst, self.worst_cpu = True, 0.0, 0.0
        self.gc_runs = []

    async def run(self) -> None:
        period = 0.001
        while True:
            before, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(period)
            late = time.perf_counter() - before - period
            if self.watching:
                self.worst = max(self.worst, late)
                self.worst_cpu = max(self.worst_cpu, time.thread_time() - cpu)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


async def drive(url: str, names: list[str], keys: int) -> None:
    """One request per route: routes of a model are chosen by weight, so ask each model
    until every key has served it once (a header names the route). Each request is a
    conversation of its own: affinity would keep one conversation on one route."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(32)

        async def one(name: str, n: int) -> str:
            body = {"model": name, "messages": [{"role": "user", "content": f"hi {n}"}]}
            async with gate, session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()
                return response.headers.get("x-router-route", "")

        for name in names:
            seen: set[str] = set()
            for round_ in range(20):  # rounds: each asks about `keys` times
                asked = range(round_ * keys, (round_ + 1) * keys)
                routes = await asyncio.gather(*(one(name, n) for n in asked))
                seen.update(routes)
                if len(seen) >= keys:
                    break
            print(f"  {name}: {len(seen)} routes served", file=sys.stderr)


@dataclass
class Round:
    """One router's figures: the scrapes in order (the first creates the gauges)."""

    startup: float = 0.0
    cold_series: int = 0
    series: int = 0
    page_bytes: int = 0
    idle: float = 0.0  # the ticker's worst with no scrape, over 2 s
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    slices: list[float] = field(default_factory=list)
    gc_runs: list[list[tuple[int, float]]] = field(default_factory=list)  # per scrape


def count_series(page: bytes) -> int:
    return sum(1 for line in page.splitlines() if line and not line.startswith(b"#"))


async def one_round(args: argparse.Namespace, ticker: Ticker) -> Round:
    names = [f"m{j:02d}" for j in range(args.models)]
    probe = [SimKey(f"k{i:03d}", f"sk-sim-bench-{i:06d}", rpm=10**6, tpm=10**9)
             for i in range(args.keys)]  # fmt: skip
    provider = SimProvider(keys=probe, models=names)
    result = Round()
    async with provider.serve() as sim_url:
        document, names, _ = build(args.keys, args.models, sim_url)
        config = parse_config(document, source="bench", environ={})
        started = time.perf_counter()
        runner = await start(config, "127.0.0.1", 0, rng=random.Random(0))
        tune_garbage_collector()  # as `serve` does
        result.startup = time.perf_counter() - started
        url = f"http://127.0.0.1:{bound_port(runner)}"
        try:
            result.cold_series = count_series(await asyncio.to_thread(fetch, f"{url}/metrics"))
            await drive(url, names, args.keys)
            # The simulator's buckets refill in well under a second, so most headroom
            # reports have lapsed by now; hold one on every route (as a provider with
            # minute-long resets would), the most a page can show.
            state = runner.app[APP_STATE].state
            room = Headroom(
                remaining_requests=499, limit_requests=500, requests_reset_in=60.0,
                remaining_tokens=29_990, limit_tokens=30_000, tokens_reset_in=60.0,
            )  # fmt: skip
            for each in state.config.all_routes():
                await state.state_store.put_headroom(route_scope(each), room, 600.0)
            ticker.reset()
            await asyncio.sleep(2.0)  # the same ticker with no scrape: the machine's noise
            ticker.watching, result.idle = False, ticker.worst
            page = b""
            for _ in range(args.scrapes):
                await asyncio.sleep(0.2)
                ticker.reset()
                cpu, wall = time.process_time(), time.perf_counter()
                page = await asyncio.to_thread(fetch, f"{url}/metrics")
                result.walls.append(time.perf_counter() - wall)
                result.cpus.append(time.process_time() - cpu)
                await asyncio.sleep(0.01)  # let the ticker see the end of it
                ticker.watching = False
                result.stalls.append(ticker.worst)
                result.slices.append(ticker.worst_cpu)
                result.gc_runs.append(ticker.gc_runs)
            result.series, result.page_bytes = count_series(page), len(page)
        finally:
            await runner.cleanup()
    return result


def spread(values: list[float], unit: float = 1e3, digits: int = 0) -> str:
    """Median and max, in ms."""
    return (
        f"median {statistics.median(values) * unit:.{digits}f}, max {max(values) * unit:.{digits}f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="routers, one after another")
    args = parser.parse_args()
    if args.scrapes < 2:
        parser.error("--scrapes: at least 2 (the first, and later ones)")
    # A log line per request would be most of this run's CPU.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ticker = Ticker()
    tick = asyncio.create_task(ticker.run())
    rounds = []
    for _ in range(args.rounds):
        rounds.append(await one_round(args, ticker))
        each = rounds[-1]
        print(f"round {len(rounds)}: start-up {each.startup:.2f} s; scrape wall ms "
              f"{', '.join(f'{w * 1e3:.0f}' for w in each.walls)}; stall ms "
              f"{', '.join(f'{s * 1e3:.1f}' for s in each.stalls)}", file=sys.stderr)  # fmt: skip
    tick.cancel()
    last = rounds[-1]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    routes = args.keys * args.models

    def firsts(name: str) -> list[float]:
        return [getattr(r, name)[0] for r in rounds]

    def laters(name: str) -> list[float]:
        return [value for r in rounds for value in getattr(r, name)[1:]]

    print(f"routes {routes} ({args.keys} keys x {args.models} models), after one request "
          f"each; {args.rounds} routers x {args.scrapes} scrapes")  # fmt: skip
    print(f"series at start-up {last.cold_series}, after traffic {last.series}; "
          f"page {last.page_bytes / 1e6:.2f} MB")  # fmt: skip
    for label, pick in (("first scrape (creates the route gauges)", firsts),
                        ("later scrapes", laters)):  # fmt: skip
        print(f"{label}:")
        print(f"  wall ms: {spread(pick('walls'))}; CPU ms: {spread(pick('cpus'))}")
        print(f"  event-loop stall, ms: {spread(pick('stalls'), digits=1)}; "
              f"longest CPU slice on the loop, ms: {spread(pick('slices'), digits=1)}")  # fmt: skip
    print(f"ticker with no scrape, over 2 s, ms: {spread([r.idle for r in rounds], digits=1)}")
    for label, runs in (("first", [r.gc_runs[0] for r in rounds]),
                        ("later", [each for r in rounds for each in r.gc_runs[1:]])):  # fmt: skip
        flat = [run for scrape in runs for run in scrape]
        by_generation = ", ".join(
            f"gen {g}: {sum(1 for gen, _ in flat if gen == g)} "
            f"(longest {max((t for gen, t in flat if gen == g), default=0) * 1e3:.1f} ms)"
            for g in range(3)
        )
        print(f"cyclic GC runs during the {label} scrapes: {by_generation}")
    print(f"peak RSS {rss:.0f} MiB (the rounds one after another); "
          f"threads {threading.active_count()}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
