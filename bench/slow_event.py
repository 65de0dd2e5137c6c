"""CPU for one large SSE event that arrives a little at a time: the readers must cost
time in its size, not in the square of its size.

    python bench/slow_event.py [--mib 8] [--reads 65536,16384,4096,1024]

An upstream may send one event up to the limit on one event (8 MiB by default) in small
reads, within its deadlines: before the first content event (failover/first_event.py)
and after it (wire/stream_watch.py, the relay). Each reader is fed the event a read at
a time, in this process, and the CPU per MiB is printed for each read size, with its
ratio to the largest reads' (the baseline, measured in the same run). Costs linear in
the event's size keep that ratio near 1 (a little over: more reads, more calls);
quadratic ones multiply it by the reads' size ratio (64 at 1 KiB against 64 KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.errors import UpstreamProtocolError
from router.failover.first_event import read_first_event
from router.wire.dialects import OPENAI_CHAT
from router.wire.redact import Redactor
from router.wire.stream_watch import EventTooLarge, StreamWatch


class _Reads:
    route_id = "bench/slow"

    def __init__(self, event: bytes, size: int) -> None:
        self._event, self._size, self._at = event, size, 0

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        piece = self._event[self._at : self._at + self._size]
        self._at += self._size
        return piece


def first_event(event: bytes, size: int, limit: int) -> float:
    started = time.process_time()
    with contextlib.suppress(UpstreamProtocolError):  # the limit: how an endless one ends
        asyncio.run(read_first_event(_Reads(event, size), OPENAI_CHAT, 1e9, limit, Redactor()))
    return time.process_time() - started


def relay(event: bytes, size: int, limit: int) -> float:
    watch = StreamWatch(OPENAI_CHAT, limit)
    started = time.process_time()
    try:
        for at in range(0, len(event), size):
            watch.see(event[at : at + size])
    except EventTooLarge:
        pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--reads", default="65536,16384,4096,1024")
    args = parser.parse_args()
    limit = args.mib << 20
    event = b'data: {"x":"' + b"y" * limit  # never ends: read up to the limit
    sizes = sorted((int(size) for size in args.reads.split(",")), reverse=True)
    for name, reader in (("first event", first_event), ("relay", relay)):
        base = None
        for size in sizes:
            seconds = reader(event, size, limit)
            per_mib = seconds / args.mib * 1000
            base = base or per_mib
            print(f"{name:12} reads of {size:6} bytes: {per_mib:8.2f} ms CPU per MiB "
                  f"({per_mib / base:5.1f}x the {sizes[0]}-byte reads)")  # fmt: skip


if __name__ == "__main__":
    main()
