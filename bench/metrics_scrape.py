"""The /metrics scrape at 2,000 routes: series, page size, scrape time, event-loop stall.

    PYTHONPATH=. python bench/metrics_scrape.py [--keys 100] [--models 20] [--scrapes 5]

Builds 100 keys x 20 models (every model on every key: 2,000 routes) against one
simulated provider, sends requests until every route has served one (the series
every route has after real traffic), gives every route a headroom report (the most
state a route can show), then scrapes
/metrics `--scrapes` times and prints the series count, the page size, the scrape's
wall and CPU time (this process's, which holds the router: its CPU during a scrape is
the router rendering the page, plus reading it), the process RSS, and the longest stall
a 1 ms ticker task saw on the router's event loop during the scrapes: what a request or
stream in flight would have waited. Run by hand (it is not part of CI); the machine's
other load shows in the wall times, less in CPU.
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
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.config import parse_config  # noqa: E402
from router.handlers.state import APP_STATE  # noqa: E402
from router.health.tracker import route_scope  # noqa: E402
from router.server import bound_port, start, tune_garbage_collector  # noqa: E402
from router.sim import SimKey, SimProvider  # noqa: E402
from router.types import Headroom  # noqa: E402
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

        self.collections = 0  # cyclic GC runs while watching
        self.gc_worst = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.watching:
            self.collections += 1
            self.gc_worst = max(self.gc_worst, time.perf_counter() - self._gc_started)

    def reset(self) -> None:
        self.watching, self.worst, self.worst_cpu = True, 0.0, 0.0

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
    until every key has served it once (keys that answered are not asked again: a
    header names the route)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(32)

        async def one(name: str) -> str:
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            async with gate, session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()
                return response.headers.get("x-router-route", "")

        for name in names:
            seen: set[str] = set()
            for _ in range(20):  # rounds: each asks about `keys` times
                routes = await asyncio.gather(*(one(name) for _ in range(keys)))
                seen.update(routes)
                if len(seen) >= keys:
                    break
            print(f"  {name}: {len(seen)} routes served", file=sys.stderr)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    # A log line per request would be most of this run's CPU.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    names = [f"m{j:02d}" for j in range(args.models)]
    probe = [SimKey(f"k{i:03d}", f"sk-sim-bench-{i:06d}", rpm=10**6, tpm=10**9)
             for i in range(args.keys)]  # fmt: skip
    provider = SimProvider(keys=probe, models=names)
    async with provider.serve() as sim_url:
        document, names, _ = build(args.keys, args.models, sim_url)
        config = parse_config(document, source="bench", environ={})
        started = time.perf_counter()
        runner = await start(config, "127.0.0.1", 0, rng=random.Random(0))
        tune_garbage_collector()  # as `serve` does
        print(f"start-up: {time.perf_counter() - started:.2f} s", file=sys.stderr)
        url = f"http://127.0.0.1:{bound_port(runner)}"
        try:
            ticker = Ticker()
            tick = asyncio.create_task(ticker.run())
            cold = await asyncio.to_thread(fetch, f"{url}/metrics")
            await drive(url, names, args.keys)
            # The simulator's buckets refill in well under a second, so most headroom
            # reports have lapsed by now; hold one on every route (as a provider with
            # minute-long resets would), the most a page can show.
            state = runner.app[APP_STATE]
            room = Headroom(
                remaining_requests=499, limit_requests=500, requests_reset_in=60.0,
                remaining_tokens=29_990, limit_tokens=30_000, tokens_reset_in=60.0,
            )  # fmt: skip
            for each in state.config.all_routes():
                await state.state_store.put_headroom(route_scope(each), room, 600.0)
            ticker.reset()
            await asyncio.sleep(2.0)  # the same ticker with no scrape: the machine's noise
            ticker.watching, idle = False, ticker.worst
            walls, cpus, stalls, slices = [], [], [], []
            ticker.collections, ticker.gc_worst = 0, 0.0
            page = b""
            for _ in range(args.scrapes):
                await asyncio.sleep(0.2)
                ticker.reset()
                cpu, wall = time.process_time(), time.perf_counter()
                page = await asyncio.to_thread(fetch, f"{url}/metrics")
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                await asyncio.sleep(0.01)  # let the ticker see the end of it
                ticker.watching = False
                stalls.append(ticker.worst)
                slices.append(ticker.worst_cpu)
            tick.cancel()
        finally:
            await runner.cleanup()
    series = sum(1 for line in page.splitlines() if line and not line.startswith(b"#"))
    cold_series = sum(1 for line in cold.splitlines() if line and not line.startswith(b"#"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    routes = args.keys * args.models
    print(f"routes {routes} ({args.keys} keys x {args.models} models), after one request each")
    print(
        f"series at start-up {cold_series}, after traffic {series}; page {len(page) / 1e6:.2f} MB"
    )
    print(
        f"scrape wall ms: median {statistics.median(walls) * 1e3:.0f}, "
        f"max {max(walls) * 1e3:.0f}; CPU ms: median {statistics.median(cpus) * 1e3:.0f}, "
        f"max {max(cpus) * 1e3:.0f}"
    )
    print(f"event-loop stall during a scrape, ms: max {max(stalls) * 1e3:.1f} "
          f"(per scrape: {', '.join(f'{s * 1e3:.1f}' for s in stalls)}; the first one "
          "creates every route's headroom series); with no scrape, over 2 s: "
          f"{idle * 1e3:.1f}")  # fmt: skip
    print(f"longest CPU slice on the loop during a scrape, ms: max {max(slices) * 1e3:.1f} "
          f"(per scrape: {', '.join(f'{s * 1e3:.1f}' for s in slices)})")  # fmt: skip
    print(f"cyclic GC runs during the scrapes: {ticker.collections}, "
          f"longest {ticker.gc_worst * 1e3:.1f} ms")  # fmt: skip
    print(f"peak RSS {rss:.0f} MiB; threads {threading.active_count()}")


if __name__ == "__main__":
    asyncio.run(main())
