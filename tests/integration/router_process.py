"""`llm-router serve` as a real process, for tests about signals: its log read line by
line, always killed at the end."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.conftest import REPO


class RouterProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.url = ""
        self.events: list[dict[str, Any]] = []  # every log line read so far

    async def wait_for(self, event: str) -> dict[str, Any]:
        """The next log line whose event is `event` (lines before it are kept)."""
        assert self.process.stderr is not None
        while True:
            line = await self.process.stderr.readline()
            assert line, f"the router exited before logging {event!r}"
            entry = json.loads(line)
            self.events.append(entry)
            if entry["event"] == event:
                return entry

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    async def exit_code(self) -> int:
        """Wait for the exit; the rest of the log is read into `events`."""
        assert self.process.stderr is not None
        rest = await self.process.stderr.read()
        self.events += [json.loads(line) for line in rest.decode().splitlines()]
        return await self.process.wait()


@asynccontextmanager
async def router_process(
    config: Path, env: dict[str, str] | None = None, seconds: float = 30
) -> AsyncIterator[RouterProcess]:
    """The router serving `config` on a free port, listening when this yields; the
    whole test body must end within `seconds`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0",
        stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    router = RouterProcess(process)
    try:
        async with asyncio.timeout(seconds):
            router.url = (await router.wait_for("listening"))["url"].removesuffix("/v1")
            yield router
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
