"""The front door on aiohttp's pure-Python HTTP parser, which a platform with no aiohttp
wheel (or AIOHTTP_NO_EXTENSIONS=1) runs: it differs from the C parser in what it hands
the router (header names as sent, a broken body's own error unwrapped), and the front
door reaches into both. aiohttp chooses its parser at import, so the tests run in a
pytest of their own."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(240)

_MODULES = (
    "tests/integration/test_front_door.py",
    "tests/integration/test_forwarded_headers.py",
    "tests/integration/test_chunked_bodies.py",
)
# A TLS handshake has no line end: the Python parser waits for one (up to the head's
# timeout and size limit) where the C parser refuses the first byte.
_NOT_THERE = "not tls_on_the_http_port"


async def test_the_front_door_tests_pass_on_aiohttp_s_python_parser() -> None:
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-k", _NOT_THERE, *_MODULES,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 220)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    summary = output.decode(errors="replace").strip().splitlines()[-1]
    assert process.returncode == 0, output.decode(errors="replace")[-4000:]
    assert " passed" in summary and "failed" not in summary, summary
