"""The router's own resource limits are its own: no upstream is blamed for them.

The trigger is real: a child process runs a simulator and a router, opens its client
connection, then lowers its own RLIMIT_NOFILE to what is already open, so the router's
next connect to an upstream fails with EMFILE.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from tests.configs import key, model, route, routes_yaml
from tests.conftest import REPO

CHILD = r"""
import asyncio, json, os, resource

import aiohttp
from structlog.testing import capture_logs

from router.config import parse_config
from router.server import bound_port, start
from router.sim import SimKey, SimProvider
from router.upstream import translate
from tests.configs import model, route, routes_yaml, sim_keys
from tests.conftest import HI, SIM_A, SIM_B

ANT = SimKey(name="ant", api_key="sk-ant-sim-key-0000000001")


async def main():
    sim = SimProvider(keys=(SIM_A, SIM_B, ANT))
    async with sim.serve() as sim_url:
        root = sim_url.removesuffix("/v1")
        text = routes_yaml(
            keys=[*sim_keys(sim_url, SIM_A, SIM_B), *sim_keys(root, ANT, provider="anthropic")],
            models={
                "gpt-4o": model(route("a", "gpt-4o"), route("b", "gpt-4o")),
                "claude": model(route("ant", "claude-sonnet-4-6")),
            },
        )
        runner = await start(parse_config(text, source="routes.yaml", environ={}), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{bound_port(runner)}"
        chat = ("/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
        messages = ("/v1/messages", {"model": "claude", "max_tokens": 10, "messages": HI})
        out = {"refused": [], "after": []}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as response:  # the keep-alive socket
                await response.read()
            # No descriptor may be freed while the limit is down: one that is would let a
            # connect through, to a simulator that cannot accept it, and the request would
            # hang. The router warms litellm up in a thread at start (it has an Anthropic
            # key), opening and closing module files: wait for that first.
            await translate.preload()
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
            fillers = []

            def fill():  # every free descriptor below the limit taken
                try:
                    while True:
                        fillers.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    pass

            try:
                with capture_logs() as logs:
                    for path, body in (chat, messages):
                        fill()  # again: whatever closed since must not let a connect through
                        async with session.post(url + path, json=body) as response:
                            out["refused"].append(
                                [response.status, await response.json(), dict(response.headers)]
                            )
            finally:
                for fd in fillers:
                    os.close(fd)
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            out["logs"] = [
                {k: v for k, v in e.items() if isinstance(v, (str, int, float, list))}
                for e in logs
            ]
            async with session.get(f"{url}/admin/routes") as response:
                out["routes"] = (await response.json())["routes"]
            for path, body in (chat, messages):
                async with session.post(url + path, json=body) as response:
                    out["after"].append(response.status)
        await runner.cleanup()
    out["upstream_requests"] = sum(s.requests for s in sim.stats.values())
    print(json.dumps(out))


asyncio.run(main())
"""


def test_out_of_file_descriptors_is_a_clear_503_that_blames_no_upstream():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    (chat_status, chat_body, chat_headers), (ant_status, ant_body, _) = out["refused"]
    assert chat_status == 503
    assert chat_body["error"]["code"] == "router_out_of_resources"
    assert "EMFILE" in chat_body["error"]["message"]
    assert "not the upstream's fault" in chat_body["error"]["message"]
    assert chat_headers["x-router-attempts"] == "1"  # stopped at once: b would fail the same
    assert ant_status == 503 and ant_body["type"] == "error"  # Anthropic's own shape
    assert "EMFILE" in ant_body["error"]["message"]

    events = out["logs"]
    local = [e for e in events if e["event"] == "local_resource_exhausted"]
    assert len(local) == 2 and local[0]["log_level"] == "error"
    assert not [e for e in events if e["event"] in ("circuit_opened", "failover")]
    request_lines = [e for e in events if e["event"] == "request"]
    assert request_lines[0]["attempts"] == ["a/gpt-4o:local_resource"] or request_lines[0][
        "attempts"
    ] == ["b/gpt-4o:local_resource"]

    for row in out["routes"]:  # no route or key is blamed
        assert row["state"] == "available" and row["last_error"] is None, row
        assert row["error_rate"] == 0
    assert out["after"] == [200, 200]
    assert out["upstream_requests"] == 2  # only the requests after the limit was restored


def test_serve_raises_the_soft_open_file_limit_to_the_hard_one_and_logs_it(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256")
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", "http://127.0.0.1:9/v1", api_key="sk-unused-0000000000")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=low_soft_limit,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # bounded: the router logs `listening` or exits
            entry = json.loads(line)
            if entry["event"] == "listening":
                break
        else:
            raise AssertionError("router exited before listening")
        assert entry["open_files_limit"] == hard
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
