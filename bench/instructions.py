"""Instructions per request, counted by valgrind (callgrind): the same figure on a busy
machine as on a quiet one, so a small change to the request path shows.

    python bench/instructions.py [--routes 1,100,1000] [--stream] [--lean] [--raw]
                                 [--compare PATH] [--headroom] [--keep DIR] [--stream-words N]

CPU time per request (bench/cpu.py) moves by 10-20% with whatever else runs on the
machine; an instruction count does not move at all between runs. Each target runs
under `valgrind --tool=callgrind` (about 50 times slower), serves a warm-up, then its
counters are zeroed, it serves `--requests` plain or streamed requests at concurrency
8 from a simulated provider, and the count is dumped: instructions per request, the
router process alone. The targets:
- `routes=N`: this tree's router with N keys, each with its own secret, and a route on
  each for the requested model (the pool a request chooses from);
- `lean` (`--lean`): bench/passthrough_lean.py, the pass-through on the router's own
  upstream client: the router over it is what routing costs;
- `raw` (`--raw`): bench/passthrough_raw.py, the lean pass-through without aiohttp's
  web server in front: the lean one over it is what aiohttp's server side costs;
- `compare` (`--compare PATH`): another checkout's router with the first pool size.
`--stream-words N` streams answers of N words, one event each, 20 ms apart (a provider
paces its tokens; the pause lets each event arrive in a read of its own even under
valgrind): the count is then also given per event, what the relay costs.
`--headroom` gives the simulator's keys rate limits (far above what the run spends), so
every answer carries the `x-ratelimit-*` headers OpenAI sends on every response, and the
router reads and keeps the headroom they report; without it they are not sent.
Instructions are not time (a cache miss or a syscall costs more than an add), but a
change that adds instructions to every request costs CPU. Needs valgrind
(`apt-get install valgrind`). `--keep DIR` keeps each target's callgrind dump there,
for `callgrind_annotate DIR/lean.out` to say which C functions the count went to.
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
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cpu import free_port, pool_secret  # noqa: E402

CONCURRENCY = 8
WARMUP = 100


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120  # a start under valgrind takes several seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # answering: the pass-through has no /healthz
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in 120 s")


def ready_chat(
    port: int, process: subprocess.Popen[bytes], *, stream: bool
) -> tuple[str, dict[str, object]]:
    """Once the target on `port` answers: the chat URL and the body every request sends."""
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/healthz", process)
    body: dict[str, object] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    return base + "/v1/chat/completions", body


async def drive(url: str, body: dict[str, object], count: int) -> None:
    async with aiohttp.ClientSession() as session:
        await send(session, url, body, count, CONCURRENCY)


async def send(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], count: int, concurrency: int
) -> None:
    """`count` requests of `body` on `session`, `concurrency` at a time; each must be a 200."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate, session.post(url, json=body) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")

    await asyncio.gather(*(one() for _ in range(count)))


def count(command: list[str], tree: Path, port: int, args: argparse.Namespace) -> float:
    """Millions of instructions per request of `command` (serving on `port`)."""
    out = Path(tempfile.mkdtemp(prefix="callgrind-"))
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%n", *command],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url, body = ready_chat(port, process, stream=args.stream or bool(args.stream_words))
        asyncio.run(drive(url, body, WARMUP))
        subprocess.run(["callgrind_control", "--zero", str(process.pid)], check=True,
                       capture_output=True)  # fmt: skip
        asyncio.run(drive(url, body, args.requests))
        subprocess.run(["callgrind_control", "--dump", str(process.pid)], check=True,
                       capture_output=True)  # fmt: skip
        dumps = sorted(out.glob("cg.*"), key=lambda p: p.stat().st_mtime)
        text = dumps[-1].read_text(errors="replace")
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(dumps[-1], Path(args.keep) / f"{args.target_name}.out")
        found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
        if found is None:
            raise RuntimeError(f"no total in {dumps[-1]}")
        return int(found.group(1)) / args.requests / 1e6
    finally:
        stop(process)
        shutil.rmtree(out, ignore_errors=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a target: SIGTERM, then SIGKILL if it is not gone in 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


# Per minute, far above what a run spends: answers report headroom and never run out.
HEADROOM_LIMITS = ":100000000:100000000000"


def sim_key(i: int, *, headroom: bool) -> str:
    """The simulator's `--key` for pool key i; with rate limits when `headroom`."""
    return f"k{i}:{pool_secret(i)}" + (HEADROOM_LIMITS if headroom else "")


def pool_config(directory: Path, sim_url: str, routes: int) -> Path:
    keys = "".join(
        f'  k{i}: {{provider: openai, api_base: "{sim_url}", api_key: "{pool_secret(i)}"}}\n'
        for i in range(routes)
    )
    listed = "".join(f"      - {{key: k{i}, model: gpt-4o}}\n" for i in range(routes))
    path = directory / f"pool-{routes}.yaml"
    path.write_text(f"keys:\n{keys}models:\n  gpt-4o:\n    routes:\n{listed}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", default="1", metavar="N,N", help="pool sizes (default 1)")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--lean", action="store_true", help="also the lean pass-through")
    parser.add_argument(
        "--raw", action="store_true", help="also the lean pass-through without aiohttp's server"
    )
    parser.add_argument("--compare", default="", metavar="PATH", help="another checkout")
    parser.add_argument(
        "--stream-words", type=int, default=0, metavar="N", help="long streams, paced"
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--keep", default="", metavar="DIR", help="keep the dumps in DIR")
    parser.add_argument(
        "--headroom", action="store_true", help="answers carry x-ratelimit-* headers"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    sizes = [int(size) for size in args.routes.split(",")]  # key k0 serves the pass-through too
    keys = [arg for i in range(max(sizes)) for arg in ("--key", sim_key(i, headroom=args.headroom))]
    if args.stream_words:
        keys += ["--reply-words", str(args.stream_words), "--chunk-delay", "0.02"]
    sim = subprocess.Popen(
        [sys.executable, "-m", "router.sim", "--port", "0", *keys],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        sim_url = sim.stdout.readline().split()[-1]
        directory = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
        mode = "streamed" if args.stream or args.stream_words else "plain"
        # The role, finish and usage chunks and the terminator besides the words.
        events = args.stream_words + 4 if args.stream_words else 0
        # (name, tree, the router's config, or the pass-through script to run instead)
        targets: list[tuple[str, Path, str]] = []
        for size in sizes:
            targets.append((f"routes={size}", ROOT, str(pool_config(directory, sim_url, size))))
        if args.compare:
            config = str(pool_config(directory, sim_url, sizes[0]))
            targets.append((f"compare routes={sizes[0]}", Path(args.compare).resolve(), config))
        if args.lean:
            targets.append(("lean", ROOT, "passthrough_lean.py"))
        if args.raw:
            targets.append(("raw", ROOT, "passthrough_raw.py"))
        for name, tree, config in targets:
            port = free_port()
            if config.endswith(".py"):
                script = str(tree / "bench" / config)
                command = [sys.executable, script, "--upstream", sim_url,
                           "--key", pool_secret(0), "--port", str(port)]  # fmt: skip
            else:
                command = [sys.executable, "-m", "router", "serve", "--config", config,
                           "--port", str(port)]  # fmt: skip
            args.target_name = name.replace(" ", "-")
            millions = count(command, tree, port, args)
            per_event = f" ({millions * 1e6 / events:,.0f} per event)" if events else ""
            print(f"{name:22s} {millions:.3f} M instructions per {mode} request{per_event}",
                  flush=True)  # fmt: skip
    finally:
        sim.terminate()
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
