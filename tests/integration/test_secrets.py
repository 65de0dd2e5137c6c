"""No secret leaves where it belongs: not in any log line (the router's or a library's),
not in an error body or error event the client gets, escaped or cut short."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.configs import key, model, route, routes_yaml
from tests.conftest import REPO, SIM_A
from tests.integration.test_cli import ENV

CLIENT_KEY = "router-client-key-0123456789"


@asynccontextmanager
async def router_process(
    config: Path, env: dict[str, str], *extra: str
) -> AsyncIterator[tuple[str, list[str]]]:
    """`llm-router serve` as a child process: (its base URL, every line it wrote to
    stdout and stderr, complete once the block is left and the process has stopped)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**ENV, **env}, cwd=REPO,
    )  # fmt: skip
    assert process.stderr is not None and process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, f"router exited before listening: {lines}"
                lines.append(line)
                if '"listening"' in line:
                    break
        url = json.loads(lines[-1])["url"].removesuffix("/v1")
        yield url, lines
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await process.communicate()
        lines.extend((err + out).decode().splitlines(keepends=True))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def raw_request(url: str, request: bytes) -> bytes:
    """`request` written as is on a new connection; everything the router answers."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def _config(tmp_path: Path, sim_url: str) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", sim_url, api_key="${SIM_KEY}")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
            server={"client_keys": ["${ROUTER_KEY}"]},
        )
    )
    return config


async def test_aiohttps_bad_request_line_is_json_and_redacted_like_the_routers_own(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A)
    env = {"SIM_KEY": SIM_A.api_key, "ROUTER_KEY": CLIENT_KEY}
    async with router_process(_config(tmp_path, sim_url), env) as (url, lines):
        # A control byte in a header value: aiohttp's parser refuses the request and its
        # own logger quotes the raw header line, which here holds the client's key.
        answer = await raw_request(
            url,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {CLIENT_KEY}\x01\r\n".encode()
            + f"x-api-key: {CLIENT_KEY}\x02\r\n".encode()
            + b"Content-Length: 2\r\n\r\n{}",
        )
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    text = "".join(lines)
    assert CLIENT_KEY not in text and SIM_A.api_key not in text
    events = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    (bad,) = [e for e in events if e.get("logger") == "aiohttp.server"]
    assert bad["level"] == "error" and "[redacted]" in bad["exception"]
