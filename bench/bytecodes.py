"""Bytecodes executed per request, by function: where the router's Python work goes.

    python bench/bytecodes.py [--stream] [--lean] [--calls] [--headroom] [--requests 500]
                              [--routes 1] [--top 40] [--stream-words N]

A sampling profile of the router is flat and, on a shared 2-core machine, counts time
the process spent waiting for a core; callgrind's count (bench/instructions.py) is
exact but sees only CPython's C functions. This counts, for each Python function, the
bytecodes it executes per request (sys.settrace with opcode events), the same on every
run: the target serves a warm-up, the count is switched on (SIGUSR1), it serves
`--requests` requests at concurrency 8 from a simulated provider, and the count is
switched off and written (SIGUSR2). A dataclass's generated `__init__` is named after
the line that built it. Bytecodes are not time (a C call inside one can cost more than
ten others), but a function that runs fewer of them costs less. Tracing makes the
target about 20 times slower. `--stream-words N` streams answers of N words, one event
each, 20 ms apart, as bench/instructions.py does: what the relay costs per event.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pickle
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cpu import free_port, pool_secret  # noqa: E402
from instructions import drive, pool_config, ready_chat, sim_key  # noqa: E402

Where = tuple[str, int, str]


def counted(out: str, argv: list[str]) -> None:
    """Run `argv` (a script path or a module) in this process, counting on signals."""
    counts: collections.Counter[Where] = collections.Counter()
    calls = os.environ.get("BENCH_COUNT") == "calls"

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        where = (code.co_filename, code.co_firstlineno, code.co_name)
        if code.co_filename == "<string>" and frame.f_back is not None:  # a dataclass's
            caller = frame.f_back
            where = (caller.f_code.co_filename, caller.f_lineno, f"{code.co_name} from here")
        if calls:
            counts[where] += 1
            return None
        frame.f_trace_opcodes = True

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[where] += 1
            return local

        return local

    def stop(*_: Any) -> None:
        sys.settrace(None)
        part = Path(out + ".part")
        part.write_bytes(pickle.dumps(dict(counts)))
        part.replace(out)  # whole, for the driver that waits for it

    signal.signal(signal.SIGUSR1, lambda *_: sys.settrace(tracer))
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = argv
    if argv[0].endswith(".py"):
        sys.path.insert(0, str(Path(argv[0]).parent))
        runpy.run_path(argv[0], run_name="__main__")
    else:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def report(path: Path, requests: int, top: int, unit: str, events: int = 0) -> None:
    counts: dict[Where, int] = pickle.loads(path.read_bytes())
    prefixes = sorted({str(ROOT) + "/", *(p + "/" for p in sys.path if p)}, key=len, reverse=True)

    def short(filename: str) -> str:
        for prefix in prefixes:
            if filename.startswith(prefix):
                return filename[len(prefix) :]
        return filename

    by_file: collections.Counter[str] = collections.Counter()
    for (filename, _, _), n in counts.items():
        by_file[short(filename)] += n
    total = sum(counts.values()) / requests
    per_event = f" ({total / events:,.0f} per event)" if events else ""
    print(f"{total:,.0f} {unit} per request{per_event}\n\nby file:")
    for filename, n in by_file.most_common(top):
        print(f"{n / requests:8.0f}  {filename}")
    print("\nby function:")
    for (filename, line, name), n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n / requests:8.0f}  {short(filename)}:{line} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--lean", action="store_true", help="the lean pass-through instead")
    parser.add_argument("--calls", action="store_true", help="count frames entered, not bytecodes")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--routes", type=int, default=1, help="keys and routes in the pool")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--headroom", action="store_true", help="answers carry x-ratelimit-* headers"
    )
    parser.add_argument(
        "--stream-words", type=int, default=0, metavar="N", help="long streams, paced"
    )
    args = parser.parse_args()
    keys = [
        arg for i in range(args.routes) for arg in ("--key", sim_key(i, headroom=args.headroom))
    ]
    if args.stream_words:
        keys += ["--reply-words", str(args.stream_words), "--chunk-delay", "0.02"]
    sim = subprocess.Popen(
        [sys.executable, "-m", "router.sim", "--port", "0", *keys],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="bench-bytecodes-"))
    out = directory / "counts.pickle"
    target = None
    try:
        assert sim.stdout is not None
        sim_url = sim.stdout.readline().split()[-1]
        port = free_port()
        if args.lean:
            argv = [str(ROOT / "bench" / "passthrough_lean.py"), "--upstream", sim_url,
                    "--key", pool_secret(0), "--port", str(port)]  # fmt: skip
        else:
            config = pool_config(directory, sim_url, args.routes)
            argv = ["router", "serve", "--config", str(config), "--port", str(port)]
        target = subprocess.Popen(
            [sys.executable, __file__, "--counted", str(out), *argv],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "BENCH_COUNT": "calls" if args.calls else "",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url, body = ready_chat(port, target, stream=args.stream or bool(args.stream_words))
        asyncio.run(drive(url, body, 100))
        target.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        asyncio.run(drive(url, body, args.requests))
        target.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        events = args.stream_words + 4 if args.stream_words else 0
        report(out, args.requests, args.top, "calls" if args.calls else "bytecodes", events)
    finally:
        for process in (target, sim):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--counted":
        counted(sys.argv[2], sys.argv[3:])
    else:
        main()
