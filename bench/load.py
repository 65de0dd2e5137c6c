"""The load client and its statistics: one keep-alive aiohttp session, N workers.

A plain aiohttp client rather than an SDK, so the client's own cost stays small next to
what is measured; it still shares the CPU with the servers, which is why targets run
back to back under the same load client.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

# The first delta with text in it; the role-only first chunk carries "content":"".
_CONTENT = re.compile(rb'"content":\s*"[^"]')
_TAIL = 32  # bytes kept from the previous chunk, in case the marker straddles two chunks


def request_body(stream: bool, *, usage: bool = False) -> bytes:
    """`usage`: a stream that asks for its usage chunk itself (stream_options)."""
    flag = "true" if stream else "false"
    options = b',"stream_options":{"include_usage":true}' if stream and usage else b""
    return (
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hi."}],"stream":'
        + flag.encode()
        + options
        + b"}"
    )


@dataclass
class Result:
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)
    # CPU seconds spent while these requests ran: the load client's, the simulated
    # provider's, the target's (none for the simulator itself as the target).
    cpu_client: float = 0.0
    cpu_provider: float = 0.0
    cpu_target: float = 0.0
    # (requests, seconds) of each turn added, in order: one a round
    turns: list[tuple[int, float]] = field(default_factory=list)

    def add(self, other: Result) -> None:
        self.turns.append((other.requests, other.seconds))
        self.requests += other.requests
        self.seconds += other.seconds
        self.errors += other.errors
        self.latencies_ms += other.latencies_ms
        self.ttfts_ms += other.ttfts_ms
        self.cpu_client += other.cpu_client
        self.cpu_provider += other.cpu_provider
        self.cpu_target += other.cpu_target

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def ratio_interval(
    turns: list[tuple[int, float]], base_turns: list[tuple[int, float]], cycle: int
) -> tuple[float, float]:
    """A 95% confidence interval of the req/s ratio of two targets, from their turns.

    The rounds rotate the targets' order, so a turn's place in its round (first, after
    the simulator, ...) moves its req/s as much as the targets differ; the place evens out
    over a whole rotation of `cycle` rounds, in which each target takes every place once.
    Each whole rotation gives one ratio (both targets' requests over their seconds in it),
    and the interval is that of their geometric mean: plus or minus Student's t
    (1.96 + 2.4/df, within 0.03 of the table from 4 degrees of freedom up) standard
    errors of its logarithm. NaNs when there are fewer than two whole rotations."""
    logs = []
    for first in range(0, len(turns) - cycle + 1, cycle):
        mine, base = turns[first : first + cycle], base_turns[first : first + cycle]
        rate = sum(n for n, _ in mine) / sum(t for _, t in mine)
        base_rate = sum(n for n, _ in base) / sum(t for _, t in base)
        logs.append(math.log(rate / base_rate))
    if len(logs) < 2:
        return math.nan, math.nan
    mean = statistics.fmean(logs)
    half = (1.96 + 2.4 / (len(logs) - 1)) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean - half), math.exp(mean + half)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN when there is nothing to rank."""
    if not values:
        return math.nan
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> tuple:
    """(ok, latency_ms, ttft_ms or None) for one request, read to the end."""
    start = time.perf_counter()
    ttft: float | None = None
    async with session.post(url, data=body) as response:
        if not stream:
            await response.read()
        else:
            tail = b""
            async for chunk in response.content.iter_any():
                if ttft is None:
                    if _CONTENT.search(tail + chunk):
                        ttft = (time.perf_counter() - start) * 1000
                    tail = chunk[-_TAIL:]
        ok = response.status == 200 and (not stream or ttft is not None)
    return ok, (time.perf_counter() - start) * 1000, ttft


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    *,
    stream: bool,
    concurrency: int,
    count: int,
    usage: bool = False,
) -> Result:
    """Send `count` requests from `concurrency` workers; time the whole batch."""
    body = request_body(stream, usage=usage)
    result = Result(requests=count)
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                ok, latency, ttft = await _one(session, url, body, stream)
            except (aiohttp.ClientError, TimeoutError):
                result.errors += 1
                continue
            result.errors += not ok
            result.latencies_ms.append(latency)
            if ttft is not None:
                result.ttfts_ms.append(ttft)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def client_session(concurrency: int, api_key: str) -> aiohttp.ClientSession:
    # Every target gets the same headers; the router and the pass-through replace the
    # Authorization with their own, the simulator checks it.
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)
