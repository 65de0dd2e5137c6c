"""`llm-router demo`: simulated providers and a router in front of them, no keys needed.

The pool is small on purpose so failover shows within a few requests: two gpt-5.4 keys
allowed 3 requests a minute each, a third whose key was revoked (the provider answers
401, the router takes it out of rotation and says so once), and a cheaper fallback
model behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import TextIO

import aiohttp
import structlog

from router.config import catalog, parse_config
from router.handlers import answer_headers
from router.server import bound_port, start, wait_for_signal
from router.sim import SimKey, SimProvider
from router.telemetry.log_sink import LogSink

DEMO_CONFIG = """\
server:
  host: 127.0.0.1
  port: {port}
keys:
  primary:
    provider: openai
    api_base: {sim}
    api_key: sk-sim-demo-primary-0001
  backup:
    provider: openai
    api_base: {sim}
    api_key: sk-sim-demo-backup-0002
  revoked:
    provider: openai
    api_base: {sim}
    api_key: sk-sim-demo-revoked-0003
  budget:
    provider: openai
    api_base: {sim}
    api_key: sk-sim-demo-budget-0004
models:
  gpt-5.4:
    routes:
      - {{key: primary, model: gpt-5.4}}
      - {{key: backup, model: gpt-5.4}}
      - {{key: revoked, model: gpt-5.4}}
    fallback: [gpt-5.4-mini]
  gpt-5.4-mini:
    routes:
      - {{key: budget, model: gpt-5.4-mini}}
"""

# The revoked key is deliberately not known to the simulator, so it answers 401.
SIM_KEYS = [
    SimKey(name="primary", api_key="sk-sim-demo-primary-0001", rpm=3),
    SimKey(name="backup", api_key="sk-sim-demo-backup-0002", rpm=3),
    SimKey(name="budget", api_key="sk-sim-demo-budget-0004", rpm=120),
]


async def run_demo(
    *, port: int = 4000, drive: int = 0, out: TextIO | LogSink | None = None
) -> None:
    """The demo on `port`; its banner goes to `out` (the log's stream: stderr by
    default), in order with the log lines."""
    log = structlog.get_logger("router.demo")
    sim = SimProvider(keys=SIM_KEYS)
    async with sim.serve() as sim_url:
        config = parse_config(
            DEMO_CONFIG.format(port=port, sim=sim_url), source="demo.yaml", environ={}
        )
        catalog.forget()  # the loaded config holds what it needs of the model data
        runner = await start(config, config.server.host, port)
        url = f"http://127.0.0.1:{bound_port(runner)}"
        try:
            _print_banner(url, drive=drive, out=out or sys.stderr)
            log.info("demo_ready", url=f"{url}/v1", simulated_provider=sim_url)
            if drive:
                await _drive(url, drive)
            else:
                await wait_for_signal()
        finally:
            await runner.cleanup()


def _print_banner(url: str, *, drive: int, out: TextIO | LogSink) -> None:
    """How to try it by hand; with --drive, what is about to happen (it ends by itself)."""
    head = f"\nllm-router demo: OpenAI-compatible endpoint at {url}/v1 (simulated providers)\n"
    story = (
        "  the log shows the revoked key taken out, keys whose rate-limit headroom is spent\n"
        "  skipped (each request line's `skipped` says why), and gpt-5.4-mini serving once\n"
        "  gpt-5.4's keys are spent (outcome=served_by_fallback served_by=gpt-5.4-mini).\n"
    )
    if drive:
        text = f"{head}  sending {drive} requests itself, then stopping:\n{story}"
    else:
        text = (
            f"{head}"
            f"  models:  curl -s {url}/v1/models\n"
            f"  one:     curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
            """-d '{"model":"gpt-5.4","messages":[{"role":"user","content":"hi"}]}'\n"""
            f"  failover: run that 8 times;\n{story}"
            "  Ctrl-C to stop.\n"
        )
    out.write(text + "\n")
    out.flush()


async def _drive(url: str, count: int) -> None:
    body = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        for number in range(1, count + 1):
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                text = await response.text()
                route = response.headers.get(answer_headers.ROUTE, "-")
                attempts = response.headers.get(answer_headers.ATTEMPTS, "-")
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                text = json.loads(text)["choices"][0]["message"]["content"]
            line = f"request {number}: {response.status} route={route} attempts={attempts} {text}"
            if not _print_or_stop(line):
                return
            await asyncio.sleep(0)


def _print_or_stop(line: str) -> bool:
    """Print `line` to stdout; False once its reader is gone (`demo --drive 8 | head -2`):
    the drive stops there, and stdout is pointed at /dev/null so that the interpreter's
    last flush at exit does not fail too."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True
