"""The plain install, without litellm (the `translate` extra): every same-format route
serves, a config that needs translation fails at load in one line naming the extra,
and prices come from the model data shipped in the package.

litellm is installed for the test suite, so each test runs the router in a child
process whose `sitecustomize` (first on PYTHONPATH) refuses to import it, as a plain
install would, and writes down every attempt to import it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from router.sim import SimKey
from router.types import TRANSLATE_EXTRA
from tests.configs import model, route, routes_yaml, sim_key
from tests.conftest import HI, REPO, SIM_A, client
from tests.integration.router_process import router_process

ANT = SimKey(name="ant", api_key="sk-ant-sim-key-light-0001")

BLOCKER = '''
import importlib.machinery, os, sys

class NoLitellm(importlib.machinery.PathFinder):
    """sys.path's finder, for which litellm is not there (find_spec says None, an import
    raises ModuleNotFoundError) unless LITELLM_BLOCKED is 0; each import (not a mere
    importlib.util.find_spec look-up) is written down."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "litellm" and not name.startswith("litellm."):
            return super().find_spec(name, path, target)
        frame = sys._getframe(1)
        while frame is not None and not (
            frame.f_code.co_name == "find_spec"
            and frame.f_globals.get("__name__") == "importlib.util"
        ):
            frame = frame.f_back
        if frame is None:
            with open(os.environ["LITELLM_ATTEMPTS"], "a") as attempts:
                attempts.write(name + "\\n")
        if os.environ["LITELLM_BLOCKED"] == "0":
            return super().find_spec(name, path, target)
        return None

sys.meta_path[:] = [
    NoLitellm if finder is importlib.machinery.PathFinder else finder for finder in sys.meta_path
]
'''


def watching_litellm(tmp_path: Path, *, blocked: bool) -> tuple[dict[str, str], Path]:
    """The environment of a child process that writes each import of litellm down (and,
    `blocked`, cannot import it), and the file it writes them to."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    attempts = tmp_path / "litellm-attempts"
    attempts.write_text("")
    path = os.pathsep.join(p for p in (str(blocker), str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "LITELLM_ATTEMPTS": str(attempts),
        "LITELLM_BLOCKED": "1" if blocked else "0",
    }
    return env, attempts


@pytest.fixture
def without_litellm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    return watching_litellm(tmp_path, blocked=True)


async def run(*args: str, env: dict[str, str], seconds: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        async with asyncio.timeout(seconds):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_blocker_hides_litellm(without_litellm):
    env, attempts = without_litellm
    code, _, err = await run("-c", "import litellm", env=env)
    assert code == 1 and "No module named 'litellm'" in err
    assert attempts.read_text() == "litellm\n"


async def test_same_format_routes_serve_without_litellm(stack, tmp_path, without_litellm):
    env, attempts = without_litellm
    sim, sim_url = await stack.sim(SIM_A, ANT)
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[sim_key(SIM_A, sim_url), sim_key(ANT, sim.root, provider="anthropic")],
            models={
                "gpt-4o": model(route("a", "gpt-4o")),
                "claude": model(route("ant", "claude-sonnet-4-6")),
            },
        )
    )
    async with router_process(config, env=env) as router:
        completion = await client(router.url).chat.completions.create(model="gpt-4o", messages=HI)
        assert completion.choices[0].message.content == "Hello from a via gpt-4o."
        messages = {"model": "claude", "max_tokens": 16, "messages": HI}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{router.url}/v1/messages", json=messages, headers={"x-api-key": "client"}
            ) as response:
                assert response.status == 200
                answer = await response.json()
            assert answer["content"][0]["text"] == "Hello from ant via claude-sonnet-4-6."
            # Chat completions from an Anthropic key would need translation: refused in
            # OpenAI's error shape, naming the extra.
            chat = {"model": "claude", "messages": HI}
            async with session.post(f"{router.url}/v1/chat/completions", json=chat) as response:
                assert response.status == 400
                error = (await response.json())["error"]
        assert error["code"] == "unsupported_api_for_model"
        assert TRANSLATE_EXTRA in error["message"]
        router.signal()
        assert await router.exit_code() == 0
    assert sim.requests[-1].path == "/v1/messages"
    assert attempts.read_text() == ""  # nothing even tried to import litellm


async def test_with_litellm_a_passthrough_pool_loads_it_only_for_translation(stack, tmp_path):
    """The translate extra installed, an Anthropic and an OpenAI key: their own APIs pass
    through without litellm in memory; the first request that needs translation loads it."""
    env, attempts = watching_litellm(tmp_path, blocked=False)
    sim, sim_url = await stack.sim(SIM_A, ANT)
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[sim_key(SIM_A, sim_url), sim_key(ANT, sim.root, provider="anthropic")],
            models={
                "gpt-4o": model(route("a", "gpt-4o")),
                "claude": model(route("ant", "claude-sonnet-4-6")),
            },
        )
    )
    async with router_process(config, env=env, seconds=60) as router:
        openai_client = client(router.url)
        completion = await openai_client.chat.completions.create(model="gpt-4o", messages=HI)
        assert completion.choices[0].message.content == "Hello from a via gpt-4o."
        messages = {"model": "claude", "max_tokens": 16, "messages": HI}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{router.url}/v1/messages", json=messages) as response,
        ):
            assert response.status == 200
        assert attempts.read_text() == ""
        completion = await openai_client.chat.completions.create(model="claude", messages=HI)
        assert completion.choices[0].message.content == "Hello from ant via claude-sonnet-4-6."
    assert attempts.read_text().startswith("litellm\n")


def gemini_config(tmp_path: Path) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[
                sim_key(SIM_A, "http://127.0.0.1:9/v1"),
                sim_key(SimKey(name="gem", api_key="gemini-key-0001"), None, provider="gemini"),
            ],
            models={"gpt-4o": model(route("a", "gpt-4o"), route("gem", "gemini-2.5-flash"))},
        )
    )
    return config


async def test_a_config_that_needs_translation_fails_in_one_line(tmp_path, without_litellm):
    env, _ = without_litellm
    config = gemini_config(tmp_path)
    for command in (["check", str(config)], ["serve", "--config", str(config), "--port", "0"]):
        code, out, err = await run("-m", "router", *command, env=env)
        assert code == 1, (command, out, err)
        lines = [line for line in err.splitlines() if not line.startswith("{")]  # not logs
        assert len(lines) == 1, err
        assert "keys.gem.provider: provider gemini needs translation" in lines[0]
        assert TRANSLATE_EXTRA in lines[0] and "Traceback" not in err
        assert "listening" not in err


async def test_the_same_config_loads_with_litellm(tmp_path):
    code, _, err = await run("-m", "router", "check", str(gemini_config(tmp_path)), env={
        **os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    })  # fmt: skip
    assert code == 0, err


async def test_the_demo_runs_without_litellm(without_litellm):
    env, attempts = without_litellm
    env = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    code, out, err = await run("-m", "router", "demo", "--port", "0", "--drive", "4", env=env)
    assert code == 0, err
    assert len(out.splitlines()) == 4 and " 200 " in out
    assert attempts.read_text() == ""


CATALOG = """
import json
from router.config import catalog
facts = catalog.facts("{provider}", "{model}")
print(json.dumps([facts.price.input, facts.price.output, facts.max_input_tokens]))
"""


@pytest.mark.parametrize(
    ("provider", "model_name", "entry"),
    [("openai", "gpt-4o", "gpt-4o"), ("gemini", "gemini-2.5-flash", "gemini/gemini-2.5-flash")],
)
async def test_prices_come_from_the_shipped_data_without_litellm(
    without_litellm, provider, model_name, entry
):
    env, _ = without_litellm
    shipped = json.loads((REPO / "router/config/model_data.json").read_text())["models"][entry]
    script = CATALOG.format(provider=provider, model=model_name)
    code, out, err = await run("-c", script, env=env)
    assert code == 0, err
    assert json.loads(out) == [
        shipped["input_cost_per_token"],
        shipped["output_cost_per_token"],
        shipped["max_input_tokens"],
    ]
