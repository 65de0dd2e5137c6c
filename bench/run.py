"""Benchmark: straight to the simulator vs a bare pass-through vs the router, side by side.

    python bench/run.py [--requests 4000] [--warmup 200] [--rounds 32] [--cells json:1,sse:32]

Everything runs on 127.0.0.1 as subprocesses of this script, which is also the load
client; all of them share this machine's cores, so the numbers are relative, not absolute.
Per cell the targets run back to back, the order rotating each round, so that machine
noise hits them alike; in the default 32 rounds each of the four targets takes each
place eight times. Short turns follow this shared machine's noise more closely than
long ones: an A/A run (`--compare` with a worktree of the same commit, so two routers
that differ in nothing) measured the two 0.00 to 0.08 apart at sse:32 in six runs of
8 rounds, and 0.00 to 0.02 apart in five of 32. A turn at c=32 is then 250 requests,
the last few sent with fewer than 32 in flight, which every target pays alike. Each
target keeps its own warm keep-alive connections. Each ratio between two targets comes
with a 95% confidence interval from its ratio in each whole rotation of the order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop

# `python bench/run.py` puts bench/ on sys.path, so the sibling module imports as `load`.
from load import Result, client_session, drive, percentile, ratio_interval

ROOT = Path(__file__).resolve().parent.parent
SIM_KEY = "sk-bench-0123456789abcdef"
CONFIG = """\
keys:
  sim: {provider: openai, api_base: "SIM_URL", api_key: "${BENCH_SIM_KEY}"}
models:
  gpt-4o: {routes: [{key: sim, model: gpt-4o}]}
"""
# --redis: every router prices its route and keeps a budget for the key, so each request
# writes spend to its state (the work the Redis backend ships to Redis); router-redis
# keeps that state in Redis, the others in memory.
BUDGETED = """\
keys:
  sim: {provider: openai, api_base: "SIM_URL", api_key: "${BENCH_SIM_KEY}",
        budget: {usd_per_day: 1000000}}
models:
  gpt-4o:
    routes: [{key: sim, model: gpt-4o, price: {input_per_mtok: 2.5, output_per_mtok: 10}}]
"""
REDIS_STATE = 'state: {backend: redis, url: "${BENCH_REDIS_URL}", prefix: bench}\n'
MAX_REDIS_P50_ADDED_MS = 0.05  # issue 13: no round trip on the path
MIN_REDIS_RPS_RATIO = 0.95
CELLS = [("json", 1), ("json", 32), ("sse", 1), ("sse", 32)]
READY_TIMEOUT = 20.0
MAX_P50_ADDED_MS = 0.3  # the lead's targets: c=1 latency added, c=32 throughput kept
MIN_RPS_RATIO = 0.85
MAX_RSS_MB = 100.0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""


def spawn(name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    # Output goes to a file, not a pipe: nobody has to drain it while the bench runs.
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, *args],
            # `python -m router` puts the working directory first on the path, so the
            # compared checkout runs from its own tree.
            cwd=(env or {}).get("PYTHONPATH", ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return Proc(name, popen, log)


def _check_alive(proc: Proc) -> None:
    if proc.popen.poll() is not None:
        tail = proc.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")


async def wait_listening(proc: Proc) -> str:
    """The URL from the `listening on URL` line, within READY_TIMEOUT."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", proc.log.read_text())
        if found:
            return found.group(1)
        _check_alive(proc)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{proc.name} printed no listening line in {READY_TIMEOUT}s")


async def wait_healthy(proc: Proc, base: str) -> None:
    # The router gets a port picked here and is polled until /healthz answers, which
    # works whatever its log level.
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline:
            _check_alive(proc)
            try:
                async with session.get(base + "/healthz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not answer /healthz in {READY_TIMEOUT}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvloop_switch() -> bool:
    spec = importlib.util.find_spec("router.cli")
    return spec is not None and "LLM_ROUTER_UVLOOP" in Path(str(spec.origin)).read_text()


async def start_router(
    name: str, sim_url: str, workdir: Path, env: dict[str, str], config_text: str = CONFIG
) -> Proc:
    config = workdir / f"{name}.yaml"
    config.write_text(config_text.replace("SIM_URL", sim_url))
    port = free_port()
    # -X importtime logs every module as it is first imported, at any time, so the log
    # tells whether litellm was ever loaded; modules already loaded cost nothing extra.
    args = ["-X", "importtime", "-m", "router", "serve", "--config", str(config)]
    # The default log level (info: one JSON line per request) is what users run, so
    # that is what is measured; the lines go to a file in the work directory.
    args += ["--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(name, args, workdir, {"BENCH_SIM_KEY": SIM_KEY, **env})
    proc.url = f"http://127.0.0.1:{port}/v1"
    await wait_healthy(proc, f"http://127.0.0.1:{port}")
    return proc


async def start_all(
    workdir: Path, procs: list[Proc], compare: str = "", redis: bool = False
) -> list[Proc]:
    """Start everything; return the targets in bench order. `procs` collects for cleanup.

    `compare`: another checkout of the router (`git worktree add /tmp/old REV`), run as
    `router-compare` in the same cells, so a regression is measured in one run rather
    than across runs on a noisy machine. `redis`: a redis-server and `router-redis`,
    the same router with its state there (every router then keeps a budget).
    """
    sim = spawn("sim", ["-m", "router.sim", "--port", "0", "--key", f"sim:{SIM_KEY}"], workdir)
    procs.append(sim)
    sim.url = await wait_listening(sim)
    passthrough_args = ["bench/passthrough.py", "--upstream", sim.url, "--key", SIM_KEY]
    passthrough = spawn("passthrough", [*passthrough_args, "--port", "0"], workdir)
    procs.append(passthrough)
    passthrough.url = await wait_listening(passthrough)
    config = BUDGETED if redis else CONFIG
    variants: list[tuple[str, dict[str, str], str]] = [("router", {}, config)]
    if compare:
        variants.append(("router-compare", {"PYTHONPATH": compare}, config))
    elif uvloop_switch() and not redis:
        variants.append(("router-asyncio", {"LLM_ROUTER_UVLOOP": "0"}, config))
    if redis:
        server = await start_redis(workdir)
        procs.append(server)
        variants.append(("router-redis", {"BENCH_REDIS_URL": server.url}, config + REDIS_STATE))
    for name, env, text in variants:
        procs.append(await start_router(name, sim.url, workdir, env, text))
    direct = Proc("direct", sim.popen, sim.log, sim.url)
    routers = [proc for proc in procs[2:] if proc.name.startswith("router")]
    return [direct, passthrough, *routers]


def spawn_redis(workdir: Path, port: int) -> Proc:
    log = workdir / "redis.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return Proc("redis", popen, log, f"redis://127.0.0.1:{port}/0")


async def start_redis(workdir: Path) -> Proc:
    port = free_port()
    proc = spawn_redis(workdir, port)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        await asyncio.sleep(0.05)
    raise TimeoutError("redis-server did not start")


def stop_all(procs: list[Proc]) -> None:
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=5)


async def run_cell(
    sessions: dict[str, aiohttp.ClientSession],
    targets: list[Proc],
    cell: tuple[str, int],
    args: argparse.Namespace,
) -> dict[str, Result]:
    """Each target has its own client session, so its keep-alive connections stay open
    between its turns: with one shared pool, each turn closed the previous target's
    connections and opened its own, and a target that ran twice in a row at a round's
    turn skipped that cost (an A/A run measured the same router 4-5 points apart in two
    positions). The order rotates each round, so every target takes every position."""
    kind, concurrency = cell
    stream = kind == "sse"
    count = args.requests * (2 if concurrency > 1 else 1) // args.rounds
    results = {t.name: Result() for t in targets}
    send = functools.partial(drive, stream=stream, concurrency=concurrency, usage=args.client_usage)
    for target in targets:
        url = target.url + "/chat/completions"
        await send(sessions[target.name], url, count=args.warmup)
    provider = targets[0].popen.pid  # "direct": the simulator
    for number in range(args.rounds):
        shift = number % len(targets)
        for target in targets[shift:] + targets[:shift]:
            url = target.url + "/chat/completions"
            pid = target.popen.pid
            before = (own_cpu(), cpu_seconds(provider), cpu_seconds(pid))
            turn = await send(sessions[target.name], url, count=count)
            turn.cpu_client = own_cpu() - before[0]
            turn.cpu_provider = cpu_seconds(provider) - before[1]
            turn.cpu_target = cpu_seconds(pid) - before[2] if pid != provider else 0.0
            results[target.name].add(turn)
    return results


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far (in clock ticks: 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN when a cell has no TTFT


def print_cell(cell: tuple[str, int], results: dict[str, Result]) -> None:
    kind, concurrency = cell
    label = "non-streaming" if kind == "json" else "streaming"
    some = next(iter(results.values()))
    print(f"\n== {label}, concurrency {concurrency}: {some.requests} requests per target ==")
    print(
        f"{'target':<15}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ttft50':>9}{'ttft99':>9}"
        f"{'errors':>8}"
    )
    for name, r in results.items():
        lat, ttft = r.latencies_ms, r.ttfts_ms
        print(
            f"{name:<15}{r.rps:>9.0f}{ms(percentile(lat, 0.5)):>9}{ms(percentile(lat, 0.99)):>9}"
            f"{ms(percentile(ttft, 0.5)):>9}{ms(percentile(ttft, 0.99)):>9}{r.errors:>8}"
        )
    # Every process shares the machine's cores, so a target that makes the provider or
    # the client work harder lowers its own req/s: this says whose CPU went where.
    print("CPU per request, us (load client / simulated provider / target):")
    for name, r in results.items():
        per = 1e6 / r.requests if r.requests else math.nan
        target = f"{r.cpu_target * per:.0f}" if name != "direct" else "-"
        print(f"  {name:<15}{r.cpu_client * per:>6.0f} /{r.cpu_provider * per:>5.0f} /{target:>5}")
    for router in (n for n in results if n.startswith("router")):
        for base in ("passthrough", "direct"):
            print(compare(router, base, results, concurrency))
    if "router-redis" in results:
        print(compare_redis(results, concurrency))


def compare(router: str, base: str, results: dict[str, Result], concurrency: int) -> str:
    r, b = results[router], results[base]
    ratio = r.rps / b.rps if b.rps else float("nan")
    added = percentile(r.latencies_ms, 0.5) - percentile(b.latencies_ms, 0.5)
    low, high = ratio_interval(r.turns, b.turns, len(results))
    line = f"{router} vs {base}: {ratio:.2f}x req/s (95% CI {low:.2f}-{high:.2f})"
    line += f", p50 {added:+.2f} ms"
    if r.ttfts_ms:
        line += f", ttft p50 {percentile(r.ttfts_ms, 0.5) - percentile(b.ttfts_ms, 0.5):+.2f} ms"
    if base == "passthrough" and concurrency == 1:
        line += f"  [target p50 <= +{MAX_P50_ADDED_MS} ms: {verdict(added <= MAX_P50_ADDED_MS)}]"
    if base == "passthrough" and concurrency > 1:
        line += f"  [target >= {MIN_RPS_RATIO:.2f}x: {verdict(ratio >= MIN_RPS_RATIO)}]"
    return line


def compare_redis(results: dict[str, Result], concurrency: int) -> str:
    r, b = results["router-redis"], results["router"]
    ratio = r.rps / b.rps if b.rps else float("nan")
    added = percentile(r.latencies_ms, 0.5) - percentile(b.latencies_ms, 0.5)
    line = f"router-redis vs router: {ratio:.2f}x req/s, p50 {added:+.2f} ms"
    if concurrency == 1:
        ok = added <= MAX_REDIS_P50_ADDED_MS
        return line + f"  [target p50 <= +{MAX_REDIS_P50_ADDED_MS} ms: {verdict(ok)}]"
    ok = ratio >= MIN_REDIS_RPS_RATIO
    return line + f"  [target >= {MIN_REDIS_RPS_RATIO:.2f}x: {verdict(ok)}]"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def print_process_report(targets: list[Proc]) -> None:
    print()
    for proc in targets[1:]:
        size = rss_mb(proc.popen.pid)
        note = f"  [target < {MAX_RSS_MB:.0f} MB: {verdict(size < MAX_RSS_MB)}]"
        print(f"{proc.name} RSS: {size:.1f} MB{note if proc.name.startswith('router') else ''}")
    # /proc/PID/maps cannot tell: litellm is pure Python and maps no file of its own.
    for proc in (t for t in targets if t.name.startswith("router")):
        imported = re.search(r"\|\s+litellm(\.|\s*$)", proc.log.read_text(), re.M)
        uvloop_mapped = "uvloop" in Path(f"/proc/{proc.popen.pid}/maps").read_text()
        print(
            f"{proc.name}: litellm imported (per -X importtime): {'YES' if imported else 'no'}; "
            f"uvloop loaded: {'yes' if uvloop_mapped else 'no'}"
        )


async def bench(args: argparse.Namespace) -> None:
    procs: list[Proc] = []
    # SIGTERM cancels the run like Ctrl-C does, so the finally below still stops everything.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    cells = [c for c in CELLS if not args.cells or f"{c[0]}:{c[1]}" in args.cells.split(",")]
    with tempfile.TemporaryDirectory(prefix="router-bench-") as workdir:
        try:
            async with asyncio.timeout(args.timeout):
                targets = await start_all(Path(workdir), procs, args.compare, args.redis)
                print(
                    f"python {sys.version.split()[0]}, {os.cpu_count()} cores; targets: "
                    + ", ".join(f"{t.name}={t.url}" for t in targets)
                )
                if args.client_usage:
                    print(
                        "streams ask for usage themselves: the router neither adds nor strips "
                        "a usage chunk, and the provider does the same work for every target"
                    )
                if not uvloop_switch():
                    print("router/cli.py has no LLM_ROUTER_UVLOOP switch: router runs uvloop only")
                async with contextlib.AsyncExitStack() as stack:
                    concurrency = max(c for _, c in cells)
                    sessions = {
                        t.name: await stack.enter_async_context(
                            client_session(concurrency, SIM_KEY)
                        )
                        for t in targets
                    }
                    for cell in cells:
                        print_cell(cell, await run_cell(sessions, targets, cell, args))
                print_process_report(targets)
        finally:
            stop_all(procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000, help="per target at c=1 (x2 at c=32)")
    parser.add_argument("--warmup", type=int, default=200, help="per target and cell, unmeasured")
    parser.add_argument("--rounds", type=int, default=32, help="rotating-order rounds per cell")
    parser.add_argument("--cells", default="", help="e.g. json:32,sse:1 (default: all four)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    parser.add_argument(
        "--compare", default="", metavar="PATH", help="also run the router of this checkout"
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also run router-redis (state in a redis-server started here); every router "
        "then keeps a budget, so each request writes spend to its state",
    )
    parser.add_argument(
        "--client-usage",
        action="store_true",
        help="streams ask for their usage chunk themselves, so the provider does the same "
        "work for every target (by default only the router asks, for its costs)",
    )
    args = parser.parse_args()
    try:
        uvloop.run(bench(args))
    except TimeoutError as exc:
        print(
            f"\nbench aborted: {str(exc) or f'over --timeout {args.timeout:.0f}s'}", file=sys.stderr
        )
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nbench interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
