"""Syscalls per request, counted by strace: the kernel's share of a request, by call.

    python bench/syscalls.py [--stream] [--lean] [--bare] [--compare PATH]
                             [--requests 2000] [--concurrency 32]

bench/instructions.py counts what a target runs in user space; a syscall's work in the
kernel (a loopback send does the receiver's TCP work too) is not in that count, and
CPU time (bench/cpu.py) moves too much between rounds on this shared machine to show
one syscall a request. Each target here serves a warm-up from a simulated provider,
then `strace -c -f` is attached for `--requests` requests at `--concurrency` (the
client's connections stay open from the warm-up, so accepts are not counted), and the
count is divided by the requests: per call and in all. The targets: this tree's router
with one route; `--compare PATH`, another checkout's; `--lean`, the lean pass-through
(bench/passthrough_lean.py); `--bare`, the bare aiohttp one (bench/passthrough.py).
strace slows every syscall down, so timings under it mean nothing and the counts can
differ a little from an untraced run's (more requests end in each turn of the loop).
Needs strace (`apt-get install strace`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cpu import free_port, pool_secret  # noqa: E402
from instructions import pool_config, ready_chat, send, sim_key, stop  # noqa: E402

WARMUP = 300
# A line of strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall.
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def counts(table: str) -> dict[str, int]:
    """strace -c's table as calls by syscall."""
    found: dict[str, int] = {}
    for line in table.splitlines():
        row = _ROW.match(line)
        if row is not None and row.group(2) != "total":
            found[row.group(2)] = int(row.group(1))
    return found


def measure(command: list[str], tree: Path, args: argparse.Namespace) -> dict[str, int]:
    """Syscalls by name over `args.requests` requests to the target `command` starts."""
    port = int(command[-1])
    out = Path(tempfile.mkdtemp(prefix="syscalls-"))
    target = subprocess.Popen(
        command, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url, body = ready_chat(port, target, stream=args.stream)

        async def run() -> None:
            # One client session for both phases: its connections are open before the
            # count starts, so the count is of requests, not of connection setup.
            async with aiohttp.ClientSession() as session:
                await send(session, url, body, WARMUP, args.concurrency)
                tracer = await asyncio.create_subprocess_exec(
                    "strace", "-c", "-f", "-p", str(target.pid), "-o", str(out / "table"),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                await asyncio.sleep(1.0)  # attached to every thread before the count starts
                try:
                    await send(session, url, body, args.requests, args.concurrency)
                finally:
                    tracer.terminate()
                    await asyncio.wait_for(tracer.wait(), 30)

        asyncio.run(run())
        return counts((out / "table").read_text())
    finally:
        stop(target)
        shutil.rmtree(out, ignore_errors=True)


@contextmanager
def simulator() -> Iterator[str]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "router.sim", "--port", "0", "--key", sim_key(0, headroom=False)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        yield sim.stdout.readline().split()[-1]
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--lean", action="store_true", help="also the lean pass-through")
    parser.add_argument("--bare", action="store_true", help="also the bare aiohttp one")
    parser.add_argument("--compare", default="", metavar="PATH", help="another checkout")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("strace") is None:
        raise SystemExit("needs strace: apt-get install strace")
    with simulator() as sim_url:
        config = str(pool_config(Path(tempfile.mkdtemp(prefix="bench-syscalls-")), sim_url, 1))
        targets: list[tuple[str, Path, list[str]]] = []
        serve = [sys.executable, "-m", "router", "serve", "--config", config, "--port"]
        targets.append(("router", ROOT, serve))
        if args.compare:
            targets.append(("compare", Path(args.compare).resolve(), serve))
        for flag, script in ((args.lean, "passthrough_lean.py"), (args.bare, "passthrough.py")):
            if flag:
                upstream = ["--upstream", sim_url, "--key", pool_secret(0), "--port"]
                command = [sys.executable, str(ROOT / "bench" / script), *upstream]
                targets.append((script.removesuffix(".py"), ROOT, command))
        mode = "streamed" if args.stream else "plain"
        for name, tree, command in targets:
            found = measure([*command, str(free_port())], tree, args)
            per = {call: n / args.requests for call, n in found.items()}
            top = sorted(per.items(), key=lambda item: -item[1])
            calls = ", ".join(f"{call} {n:.2f}" for call, n in top if n >= 0.01)
            print(f"{name:22s} {sum(per.values()):.2f} syscalls per {mode} request: {calls}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
