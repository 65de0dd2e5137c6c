"""Router CPU time per request, this checkout against another, in one run.

    python bench/cpu.py [--compare /tmp/old] [--stream] [--requests 4000]
    python bench/cpu.py --routes 1,100,1000 [--stream]
    python bench/cpu.py --stream-words 200 --requests 600 [--compare /tmp/old]


Throughput ratios on a shared 2-core machine move with whatever else runs; the router
process's own CPU time (utime + stime from /proc) per request does not care who else is
busy, so it shows what a change costs. Both routers, and the bare pass-through of
bench/passthrough.py as the floor, serve the same simulated provider, with default
settings (info logging), at concurrency 32, in alternating order. `pass-lean` is the
same pass-through on the router's own upstream client (bench/passthrough_lean.py): the
router over it is what routing alone costs. `pass-raw` is the lean one without aiohttp's
web server in front (bench/passthrough_raw.py, a floor with none of a server's limits):
the lean one over it is what aiohttp's server side costs a request. The provider's CPU
per request is printed too: what the router asks of it (a usage chunk on streams) is
work on the same cores.
Make the other checkout with `git worktree add /tmp/old REV`.

`--routes 1,100,1000` runs this tree once per count, with that many routes (keys) on the
requested model, all healthy, to show what route choice costs as the pool grows; each
router's start-up time (process start to a ready /healthz) is printed too.

`--stream-words 200` streams answers of that many words, one event each, 1 ms apart (as
a provider paces tokens, so that each arrives in a read of its own): what the relay
costs per event, over a pass-through that only copies them. Every target's CPU per
request is then also given per event of the stream (the words, the role, finish and
usage chunks and the terminator).

`--conversation-kb 900` sends a conversation of about that many kilobytes (turns of 4 KB,
as a coding agent's long session) instead of one short message: what a request's size
costs the router (parsing, the nesting check, the prompt-window estimate) over a
pass-through that only copies it. The simulator takes bodies up to 1 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
KEY = "sim-bench-key-0000000000001"
CONCURRENCY = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def start_router(tree: Path, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # `python -m router` puts the working directory first on the path: each tree runs
    # its own code.
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def start_passthrough(
    sim_url: str, script: str = "passthrough.py"
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = str(ROOT / "bench" / script)
    process = subprocess.Popen(
        [sys.executable, path, "--upstream", sim_url, "--key", KEY, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # passthrough_lean.py imports router
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    health = url.replace("/v1/chat/completions", "/healthz")
    async with asyncio.timeout(20):
        while True:
            try:
                async with session.get(health) as response:
                    if response.status in (200, 404):  # 404: the pass-through has no /healthz
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


def wait_ready_blocking(url: str) -> None:
    health = url.replace("/v1/chat/completions", "/healthz")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{health} not ready in 60 s")


Routers = dict[str, tuple[subprocess.Popen[bytes], str]]


def start_all(args: argparse.Namespace, processes: list[subprocess.Popen[bytes]]) -> Routers:
    pool = max((int(count) for count in args.routes.split(",")), default=0) if args.routes else 0
    keys = [arg for i in range(pool) for arg in ("--key", f"k{i}:{pool_secret(i)}")]
    argv = [sys.executable, "-m", "router.sim", "--port", "0", "--key", f"sim:{KEY}", *keys]
    if args.stream_words:
        argv += ["--reply-words", str(args.stream_words), "--chunk-delay", "0.001"]
    sim = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes.append(sim)
    assert sim.stdout is not None
    sim_url = sim.stdout.readline().split()[-1]
    config = Path(tempfile.mkdtemp()) / "routes.yaml"
    budget = ", budget: {usd_per_day: 1000000}" if args.redis else ""
    price = ", price: {input_per_mtok: 2.5, output_per_mtok: 10}" if args.redis else ""
    config.write_text(
        f'keys: {{sim: {{provider: openai, api_base: "{sim_url}", api_key: "{KEY}"{budget}}}}}\n'
        # A window that holds the longest --conversation-kb, so that none is refused.
        f"models: {{gpt-4o: {{routes: [{{key: sim, model: gpt-4o{price}, "
        f"max_input_tokens: 1000000}}]}}}}\n"
    )
    if args.routes:
        routers = {}
        for count in args.routes.split(","):
            # One at a time, so that each start-up has the machine to itself.
            started = time.perf_counter()
            routers[f"routes={count}"] = router = start_router(
                ROOT, pool_config(config, sim_url, int(count))
            )
            processes.append(router[0])
            wait_ready_blocking(router[1])
            print(f"routes={count}: ready {time.perf_counter() - started:.2f}s after start")
        return routers
    routers = {
        "this": start_router(ROOT, config),
        "pass": start_passthrough(sim_url),
        "pass-lean": start_passthrough(sim_url, "passthrough_lean.py"),
        "pass-raw": start_passthrough(sim_url, "passthrough_raw.py"),
    }
    if args.compare:
        routers["compare"] = start_router(Path(args.compare).resolve(), config)
    if args.redis:
        # The same router and budget, its state in a redis-server started here.
        port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(redis)
        shared = config.with_name("redis.yaml")
        state = f'state: {{backend: redis, url: "redis://127.0.0.1:{port}/0", prefix: bench}}\n'
        shared.write_text(config.read_text() + state)
        routers["redis"] = start_router(ROOT, shared)
    processes += [process for process, _ in routers.values()]
    return routers


def pool_secret(index: int) -> str:
    return f"sim-pool-key-{index:06d}-{index * 7919:012x}"


def pool_config(config: Path, sim_url: str, count: int) -> Path:
    """`count` keys, each with its own secret as in a real pool (the log's redaction
    searches them all), and a route on each."""
    keys = "".join(
        f'  k{i}: {{provider: openai, api_base: "{sim_url}", api_key: "{pool_secret(i)}"}}\n'
        for i in range(count)
    )
    routes = "".join(f"      - {{key: k{i}, model: gpt-4o}}\n" for i in range(count))
    path = config.with_name(f"pool-{count}.yaml")
    path.write_text(f"keys:\n{keys}models:\n  gpt-4o:\n    routes:\n{routes}")
    return path


async def measure(args: argparse.Namespace, routers: Routers, sim_pid: int) -> None:
    body: dict[str, object] = {"model": "gpt-4o", "messages": conversation(args.conversation_kb)}
    if args.stream or args.stream_words:
        body["stream"] = True
    # The role, finish and usage chunks and the terminator besides the words.
    events = args.stream_words + 4 if args.stream_words else 0
    # A pool per target, so that no turn pays for closing the previous one's connections.
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            name: await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
            )
            for name in routers
        }
        for name, (_, url) in routers.items():
            await wait_ready(sessions[name], url)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(name: str, url: str) -> None:
            async with gate, sessions[name].post(url, json=body) as response:
                await response.read()

        names = list(routers)
        for round_number in range(args.rounds):
            for name in names if round_number % 2 == 0 else names[::-1]:
                process, url = routers[name]
                await asyncio.gather(*(one(name, url) for _ in range(200)))  # warm-up
                (user_before, system_before), started = cpu_split(process.pid), time.perf_counter()
                sim_before = cpu_seconds(sim_pid)
                await asyncio.gather(*(one(name, url) for _ in range(args.requests)))
                user_after, system_after = cpu_split(process.pid)
                user, system = user_after - user_before, system_after - system_before
                used = user + system
                sim_used = cpu_seconds(sim_pid) - sim_before
                rate = args.requests / (time.perf_counter() - started)
                per_event = (
                    f", {used / args.requests / events * 1e6:5.2f} per event" if events else ""
                )
                print(
                    f"{name:11s} round {round_number}: "
                    f"{used / args.requests * 1e6:6.1f} us CPU per request "
                    f"({system / args.requests * 1e6:5.1f} of it system{per_event}), "
                    f"{rate:6.0f} req/s; "
                    f"the provider's CPU for it {sim_used / args.requests * 1e6:6.1f} us",
                    flush=True,
                )


def conversation(kilobytes: int) -> list[dict[str, str]]:
    """One short message, or turns of 4 KB adding up to about `kilobytes`."""
    if not kilobytes:
        return [{"role": "user", "content": "hi"}]
    turn = "word " * 800
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": turn} for i in range(max(1, kilobytes // 4) | 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", default="", metavar="PATH", help="another checkout")
    parser.add_argument("--stream", action="store_true", help="streaming requests")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also `redis`: this router with its state in Redis; both keep a budget, so "
        "every request writes spend to its state",
    )
    parser.add_argument(
        "--routes", default="", metavar="N,N", help="this tree with N routes on the model, each N"
    )
    parser.add_argument(
        "--conversation-kb", type=int, default=0, metavar="KB", help="a long conversation"
    )
    parser.add_argument(
        "--stream-words", type=int, default=0, metavar="N", help="long streams, paced"
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        routers = start_all(args, processes)
        asyncio.run(measure(args, routers, processes[0].pid))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
