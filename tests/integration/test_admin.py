"""The status page: /admin/routes (JSON) and /admin (HTML), read by real clients and Chromium.

Run `python -m tests.test_admin` by hand to redraw docs/status-page.png; the suite itself
writes only to tmp dirs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from router.sim import Fault, SimKey
from tests import configs  # by module: key, route and model name test values here
from tests.clock import FakeClock
from tests.conftest import SIM_A, SIM_B, SIM_C, Stack, ask

SIM_KEYS = (SIM_A, SIM_B, SIM_C)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, dict(response.headers), await response.text()


async def admin_routes(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/admin/routes") as response:
        assert response.status == 200
        return await response.json()


def by_name(rows: list[dict[str, Any]], field: str) -> dict[str, dict[str, Any]]:
    return {row[field]: row for row in rows}


async def ask_quietly(url: str, model: str = "gpt-4o") -> None:
    """`ask`, with a refusal let pass: these tests read the state the request leaves."""
    with contextlib.suppress(openai.APIStatusError):
        await ask(url, model)


async def mixed_states(stack: Stack, clock: FakeClock) -> str:
    """a cooling down for 30 s, c disabled for auth, b available."""
    sim, sim_url = await stack.sim(*SIM_KEYS, clock=clock)
    # a 429 on a is the first thing to happen: a is at priority 1, b at 2
    url = await stack.router(configs.preferring_a(sim_url), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    sim.inject("c", Fault.auth())
    await ask_quietly(url)
    await ask_quietly(url, "gpt-4o-mini")
    return url


async def test_cooling_route_shows_its_exact_seconds_left_and_the_other_is_available(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, clock=clock)
    url = await stack.router(configs.preferring_a(sim_url), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    await ask_quietly(url)

    status = await admin_routes(url)
    routes = by_name(status["routes"], "route")
    cooling, serving = routes["a/gpt-4o"], routes["b/gpt-4o"]
    assert cooling["state"] == "cooling_down" and cooling["reason"] == "cooldown"
    assert cooling["available_in_seconds"] == 30
    assert cooling["cooldown_ends_in"] == 30
    assert cooling["last_error"] == "rate_limited"
    assert cooling["circuit"] == "closed"
    assert cooling["models"] == ["gpt-4o"] and cooling["upstream_model"] == "gpt-4o"
    assert serving["state"] == "available" and serving["available_in_seconds"] == 0
    assert serving["cooldown_ends_in"] is None and serving["last_error"] is None
    assert serving["priority"] == 2 and serving["latency_ms"] is not None
    assert serving["headroom"].keys() == {
        "remaining_requests", "limit_requests", "remaining_tokens", "limit_tokens"
    }  # fmt: skip
    assert (status["routes_available"], status["routes_total"]) == (2, 3)

    clock.advance(12)
    later = by_name((await admin_routes(url))["routes"], "route")["a/gpt-4o"]
    assert later["available_in_seconds"] == 18


async def test_key_rejected_for_auth_is_listed_disabled_with_its_reason(stack, clock):
    sim, sim_url = await stack.sim(*SIM_KEYS, clock=clock)
    url = await stack.router(configs.two_keys_config(sim_url), clock=clock)
    sim.inject("c", Fault.auth())
    await ask_quietly(url, "gpt-4o-mini")

    status = await admin_routes(url)
    keys = by_name(status["keys"], "key")
    assert keys["c"]["state"] == "disabled" and keys["c"]["disabled_reason"] == "auth"
    assert keys["a"]["state"] == "available" and keys["a"]["disabled_reason"] is None
    route = by_name(status["routes"], "route")["c/gpt-4o-mini"]
    assert (route["state"], route["reason"], route["last_error"]) == ("disabled", "auth", "auth")


async def test_route_that_recovered_still_names_its_last_failure(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, clock=clock)
    url = await stack.router(configs.preferring_a(sim_url), clock=clock)
    sim.inject("a", Fault.server_error(502))
    await ask_quietly(url)

    route = by_name((await admin_routes(url))["routes"], "route")["a/gpt-4o"]
    assert (route["state"], route["circuit"]) == ("available", "closed")
    assert route["last_error"] == "server_error"
    assert route["consecutive_failures"] == 1
    assert route["error_rate"] > 0


async def test_status_shows_masked_keys_and_never_a_full_one(stack, clock):
    url = await mixed_states(stack, clock)
    for path in ("/admin/routes", "/admin", "/status"):
        status, _, body = await get(f"{url}{path}")
        assert status == 200
        for key in SIM_KEYS:
            assert key.api_key not in body, path
        assert "sk-...0001" in body and "sk-...0003" in body
    keys = by_name((await admin_routes(url))["keys"], "key")
    assert keys["b"]["api_key_masked"] == "sk-...0002"


async def test_skipped_keys_are_listed_with_their_reasons(stack):
    _, sim_url = await stack.sim(*SIM_KEYS)
    yaml_text = configs.routes_yaml(
        keys=[*configs.sim_keys(sim_url, *SIM_KEYS), configs.key("d", api_key="${SPARE_KEY}")],
        models=configs.two_keys_models(),
    )
    url = await stack.router(yaml_text)

    status = await admin_routes(url)
    assert status["skipped_keys"] == [{"key": "d", "reason": "SPARE_KEY is not set"}]
    _, _, page = await get(f"{url}/admin")
    assert "Skipped keys" in page and "SPARE_KEY is not set" in page


async def test_admin_asks_a_browser_for_the_client_key(stack):
    _, sim_url = await stack.sim(*SIM_KEYS)
    yaml_text = configs.two_keys_config(sim_url, server={"client_keys": ["${ROUTER_KEY}"]})
    url = await stack.router(yaml_text, environ={"ROUTER_KEY": "rk-admin-secret-1234"})

    for path in ("/admin", "/admin/routes", "/status"):
        status, headers, _ = await get(f"{url}{path}")
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic"), path
    basic = base64.b64encode(b"anyone:rk-admin-secret-1234").decode()
    status, headers, page = await get(f"{url}/admin", headers={"Authorization": f"Basic {basic}"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<meta http-equiv="refresh" content="5">' in page
    wrong = base64.b64encode(b"anyone:not-the-key").decode()
    status, _, _ = await get(f"{url}/admin", headers={"Authorization": f"Basic {wrong}"})
    assert status == 401
    bearer = {"Authorization": "Bearer rk-admin-secret-1234"}
    status, _, _ = await get(f"{url}/admin/routes", headers=bearer)
    assert status == 200


async def test_page_escapes_names_from_the_config(stack):
    _, sim_url = await stack.sim(*SIM_KEYS)
    models = configs.two_keys_models()
    models["<b>mini</b>"] = models.pop("gpt-4o-mini")
    url = await stack.router(
        configs.routes_yaml(keys=configs.sim_keys(sim_url, *SIM_KEYS), models=models)
    )
    _, _, page = await get(f"{url}/admin")
    assert "<b>mini</b>" not in page and "&lt;b&gt;mini&lt;/b&gt;" in page


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; CI installs it")
        pytest.skip("chromium is not installed")
    return found


async def run_chromium(profile: Path, *args: str) -> str:
    """Headless Chromium with its own profile; its whole process group dies afterwards."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # so the renderer and helpers can be ended with it
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    assert process.returncode == 0, f"chromium exited with {process.returncode}"
    return stdout.decode()


async def test_chromium_sees_a_row_per_route_and_the_cooling_one_marked(stack, clock, tmp_path):
    url = await mixed_states(stack, clock)
    dom = await run_chromium(tmp_path / "profile", "--dump-dom", f"{url}/admin")

    assert dom.count('<tr class="route ') == 3
    cooling = dom.split('<tr class="route state-cooling_down">')[1].split("</tr>")[0]
    assert "a/gpt-4o" in cooling
    assert "cooling down" in cooling and "available in 30 s" in cooling
    assert '<tr class="route state-disabled">' in dom and "reason: auth" in dom
    assert '<tr class="key state-disabled">' in dom
    assert '<tr class="route state-available">' in dom


async def test_chromium_screenshots_the_page(stack, clock, tmp_path):
    url = await mixed_states(stack, clock)
    png = tmp_path / "status.png"
    await run_chromium(
        tmp_path / "profile", f"--screenshot={png}", "--window-size=1200,700", f"{url}/admin"
    )
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def showcase(url: str, sims: list[SimKey]) -> str:
    """The four simulated keys (prod, team, batch, eu) at `url`, and a spare left unset."""
    return configs.routes_yaml(
        keys=[
            *configs.sim_keys(url, *sims),
            configs.key("openai-spare", api_key="${OPENAI_SPARE_KEY}"),
        ],
        models={
            "gpt-4o": configs.model(
                configs.route("openai-prod", "gpt-4o"),
                configs.route("openai-team", "gpt-4o"),
                configs.route("openai-eu", "gpt-4o", priority=2),
                fallback=["gpt-4o-mini"],
            ),
            "gpt-4o-mini": configs.model(
                configs.route("openai-batch", "gpt-4o-mini"),
                configs.route("openai-team", "gpt-4o-mini", weight=2),
                configs.route("openai-eu", "gpt-4o-mini", priority=2),
            ),
        },
    )


async def draw_showcase(out: Path) -> None:
    """docs/status-page.png: one route cooling, one key out for auth, the rest serving."""
    clock = FakeClock()
    stack = Stack()
    try:
        names = ("openai-prod", "openai-team", "openai-batch", "openai-eu")
        keys = [
            SimKey(
                name=name,
                api_key=f"sk-sim-key-{'abcd'[n]}-00000{n + 1}",
                rpm=500,
                tpm=200_000,
                latency=latency,
            )
            for n, (name, latency) in enumerate(zip(names, (0.18, 0.24, 0.09, 0.31), strict=True))
        ]
        sim, sim_url = await stack.sim(*keys, clock=clock)
        url = await stack.router(showcase(sim_url, keys), clock=clock, seed=3)
        for _ in range(12):
            await ask_quietly(url)
            await ask_quietly(url, "gpt-4o-mini")
        sim.inject("openai-prod", Fault.rate_limit(retry_after=42), times=-1)
        sim.inject("openai-batch", Fault.auth(), times=-1)
        for _ in range(4):
            await ask_quietly(url)
            await ask_quietly(url, "gpt-4o-mini")
        with tempfile.TemporaryDirectory() as profile:
            shot = (f"--screenshot={out}", "--window-size=1200,860", f"{url}/admin")
            await run_chromium(Path(profile), *shot)
    finally:
        await stack.close()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(draw_showcase(target.resolve()))
    print(f"wrote {target}")
