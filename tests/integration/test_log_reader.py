"""The router as a process whose stderr reader stops reading, or is gone: requests are
served all the same (telemetry/log_sink.py). Before the sink, the first stalled the whole
router after about a hundred requests, and the second answered every request with 500."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys

import aiohttp

from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, REPO, SIM_A
from tests.integration.router_process import router_process

ENV = {**os.environ, "SIM_KEY": SIM_A.api_key}
# Enough request lines (about 400 bytes each) to fill the pipe (64 KiB) and the test's
# own reader buffer (128 KiB) more than twice; less than the sink holds (4 MiB).
REQUESTS = 1200


def _config(tmp_path, sim_url: str):
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", sim_url, api_key="${SIM_KEY}")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )
    return config


async def _serve_all(url: str, count: int) -> dict[int, int]:
    """`count` chat requests, 16 at a time; how many got each status."""
    statuses: dict[int, int] = {}
    queue = iter(range(count))
    timeout = aiohttp.ClientTimeout(total=10)  # a stalled router fails the test, not hangs it

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            body = {"model": "gpt-4o", "messages": HI}
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(16)))
    return statuses


async def _dropped(url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        page = await response.text()
    found = re.search(r"^llm_router_log_lines_dropped_total (\S+)$", page, re.M)
    assert found is not None, "no llm_router_log_lines_dropped_total on /metrics"
    return float(found.group(1))


async def test_a_log_reader_that_stops_reading_stalls_no_request(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A)
    async with router_process(_config(tmp_path, sim_url), ENV, seconds=45) as router:
        # The test reads no more of the log until every request is answered.
        assert await _serve_all(router.url, REQUESTS) == {200: REQUESTS}
        router.signal(signal.SIGTERM)
        assert await router.exit_code() == 0
    requests = [entry for entry in router.events if entry["event"] == "request"]
    assert len(requests) == REQUESTS  # every line written once the reader came back
    assert all(entry["status"] == 200 for entry in requests)
    assert [entry["event"] for entry in router.events[-2:]] == ["draining", "stopped"]


async def test_a_log_reader_gone_costs_no_request_and_the_lost_lines_are_counted(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A)
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--config", str(_config(tmp_path, sim_url)),
        "--port", "0", stderr=write_end, env=ENV, cwd=REPO,
    )  # fmt: skip
    os.close(write_end)
    try:
        async with asyncio.timeout(45):
            with os.fdopen(read_end, "rb") as log:
                while (entry := json.loads(await asyncio.to_thread(log.readline)))["event"] != (
                    "listening"
                ):
                    pass
            # The log's reader is gone (`| head` ended, a shipper restarted).
            url = entry["url"].removesuffix("/v1")
            assert await _serve_all(url, 50) == {200: 50}
            # Counted as the sink's thread tries them: within its next write (50 ms).
            while await _dropped(url) < 50:  # noqa: ASYNC110 - another process's count
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
