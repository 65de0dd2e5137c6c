"""The command line: check, serve (as a real process) and demo."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import json
import os
import re
import shlex
import signal
import socket
import sys

import aiohttp

from router.server import GC_YOUNG_THRESHOLD, tune_garbage_collector
from router.sim import Fault
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, REPO, SIM_A, client
from tests.integration.router_process import router_process

ENV = {
    **os.environ,
    "OPENAI_API_KEY": "sk-test-aaaaaaaaaaaaaaaa1234",
    "OPENAI_API_KEY_2": "sk-test-bbbbbbbbbbbbbbbbb5678",
}
ENV.pop("GROQ_API_KEY", None)


async def run(*args: str, env: dict[str, str] | None = None, seconds: float = 30):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or ENV,
        cwd=REPO,
    )
    try:
        async with asyncio.timeout(seconds):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out.decode(), err.decode()


async def test_check_prints_the_route_table_with_keys_masked():
    code, out, _ = await run("check", "routes.yaml")
    assert code == 0
    assert "sk-...1234" in out and "sk-test-aaaaaaaaaaaaaaaa1234" not in out
    assert "gpt-5.4 -> gpt-5.4-mini" in out
    assert "groq: GROQ_API_KEY is not set" in out


async def test_check_fails_with_file_line_and_field_path(tmp_path):
    bad = tmp_path / "routes.yaml"
    text = (
        (REPO / "routes.yaml")
        .read_text()
        .replace(
            "{key: openai-backup, model: gpt-5.4, weight: 2}",
            "{key: openai-bakup, model: gpt-5.4, weight: 2}",
        )
    )
    bad.write_text(text)
    line = text.splitlines().index(next(x for x in text.splitlines() if "openai-bakup" in x)) + 1
    code, _, err = await run("check", str(bad))
    assert code == 1
    assert f"routes.yaml:{line}: models.gpt-5.4.routes[1].key: unknown key 'openai-bakup'" in err


async def test_serve_runs_as_a_process_and_stops_cleanly_on_sigterm(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A)
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", sim_url, api_key="${SIM_KEY}")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        "--config",
        str(config),
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={**ENV, "SIM_KEY": SIM_A.api_key},
        cwd=REPO,
    )
    lines: list[dict] = []
    try:
        async with asyncio.timeout(20):
            while True:
                line = await process.stderr.readline()
                assert line, "router exited before listening"
                lines.append(json.loads(line))
                if lines[-1]["event"] == "listening":
                    break
            url = lines[-1]["url"].removesuffix("/v1")
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/healthz") as response,
            ):
                assert response.status == 200
            completion = await client(url).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
            assert completion.choices[0].message.content == "Hello from a via gpt-4o."
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            rest = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [entry["event"] for entry in lines + [json.loads(x) for x in rest.splitlines()]]
    assert "request" in events and events[-2:] == ["draining", "stopped"]
    logged = "".join(json.dumps(entry) for entry in lines) + rest
    assert SIM_A.api_key not in logged


async def test_demo_shows_failover_and_fallback_without_any_key():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    code, out, err = await run("demo", "--port", "0", "--drive", "8", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 8 and all(" 200 " in line for line in lines)
    assert any("route=budget/gpt-5.4-mini" in line for line in lines)  # the fallback served
    assert "key_disabled" in err and "revoked" in err
    assert "Ctrl-C" not in err  # it ends by itself
    # Each request line says why it passed routes over, and which fallback served.
    assert "primary/gpt-5.4: headroom spent" in err
    assert "revoked/gpt-5.4: key disabled (auth)" in err
    assert "outcome=served_by_fallback" in err and "served_by=gpt-5.4-mini" in err


async def test_demo_drive_stops_quietly_when_its_reader_goes():
    """`llm-router demo --drive 8 | head -0`: stdout's reader is gone before the first
    line; the drive stops at that line and exits 0, with no BrokenPipeError traceback
    among the log lines."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "demo", "--port", "0", "--drive", "8",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    assert process.stderr is not None
    transport = process._transport  # type: ignore[attr-defined]
    transport.get_pipe_transport(1).close()  # stdout's read end
    try:
        async with asyncio.timeout(30):
            err = await process.stderr.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    assert err.count(b"] request ") == 1  # the first request's line; no more were sent


async def test_the_demo_without_drive_says_how_to_stop_it():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "demo", "--port", "0",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    try:
        banner = b""
        async with asyncio.timeout(30):
            while b"demo_ready" not in banner:
                line = await process.stderr.readline()  # type: ignore[union-attr]
                assert line, banner
                banner += line
        assert b"Ctrl-C to stop." in banner and b"curl -s http://127.0.0.1:" in banner
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()


def test_serving_freezes_startup_objects_and_collects_young_ones_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0  # this process's startup objects: out of the scans
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_port_in_use_is_one_clear_line_and_exit_1(tmp_path):
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", "http://127.0.0.1:9/v1", api_key="${SIM_KEY}")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run(
            "serve", "--config", str(config), "--port", str(port),
            env={**ENV, "SIM_KEY": SIM_A.api_key},
        )  # fmt: skip
    assert code == 1
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if not x.startswith("{")]  # JSON lines are logs
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")


async def test_an_unknown_log_level_is_one_clear_line_and_exit_1():
    code, out, err = await run("demo", "--log-level", "loud")
    assert (code, out) == (1, "")
    assert err == "error: --log-level 'loud' is not one of debug, info, warning, error, critical\n"


async def test_sighup_reloads_the_config_while_a_stream_is_in_flight(stack, tmp_path):
    sim, sim_url = await stack.sim(SIM_A)
    sim.inject("a", Fault.delay(1.0))
    config = tmp_path / "routes.yaml"
    keys = [key("a", sim_url, api_key="${SIM_KEY}")]
    config.write_text(routes_yaml(keys=keys, models={"gpt-4o": model(route("a", "gpt-4o"))}))
    env = {**ENV, "SIM_KEY": SIM_A.api_key}
    async with router_process(config, env) as router:
        stream = asyncio.create_task(
            client(router.url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        )
        while sim.stats["a"].requests == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        mini = model(route("a", "gpt-4o-mini"))
        config.write_text(routes_yaml(keys=keys, models={"gpt-4o-mini": mini}))
        router.signal(signal.SIGHUP)
        reloaded = await router.wait_for("config_reloaded")
        assert reloaded["routes_added"] == ["a/gpt-4o-mini"]
        text = "".join([c.choices[0].delta.content or "" async for c in await stream])
        assert text == "Hello from a via gpt-4o."  # begun before the reload: its config
        completion = await client(router.url).chat.completions.create(
            model="gpt-4o-mini", messages=HI
        )
        assert completion.choices[0].message.content == "Hello from a via gpt-4o-mini."
        # A broken file: said with its line, and the config before it goes on serving.
        config.write_text("keys: {}\nmodels:\n  gpt-4o: [\n")
        router.signal(signal.SIGHUP)
        failed = await router.wait_for("reload_failed")
        assert re.match(r"routes\.yaml:\d+: ", failed["error"]), failed["error"]
        assert failed["level"] == "error"
        completion = await client(router.url).chat.completions.create(
            model="gpt-4o-mini", messages=HI
        )
        assert completion.choices[0].message.content == "Hello from a via gpt-4o-mini."
        router.signal(signal.SIGTERM)
        assert await router.exit_code() == 0
    logged = json.dumps(router.events)
    assert SIM_A.api_key not in logged


async def test_sighups_while_a_reload_runs_make_one_more_not_one_each(stack, tmp_path):
    """Signals that come while a reload runs make one more reload, not one each: a
    config-management loop signalling faster than a reload takes queued a reload per
    signal, without bound. (A burst sent at once is one signal already: the kernel keeps
    one pending SIGHUP; these are spaced, each delivered while a reload of 2,000 routes
    runs.)"""
    _sim, sim_url = await stack.sim(SIM_A)
    config = tmp_path / "routes.yaml"
    keys = [key(f"k{i}", sim_url, api_key="${SIM_KEY}") for i in range(20)]
    models = {f"m{j}": model(*(route(f"k{i}", "gpt-4o") for i in range(20))) for j in range(100)}
    config.write_text(routes_yaml(keys=keys, models=models))
    env = {**ENV, "SIM_KEY": SIM_A.api_key}
    async with router_process(config, env) as router:
        for _ in range(20):
            router.signal(signal.SIGHUP)
            await asyncio.sleep(0.005)
        await router.wait_for("config_reloaded")
        await asyncio.sleep(3.0)  # every reload the signals queued has run by now
        router.signal(signal.SIGTERM)
        assert await router.exit_code() == 0
    reloads = [e for e in router.events if e["event"] == "config_reloaded"]
    assert 1 <= len(reloads) <= 6, len(reloads)


async def test_version_is_the_installed_distributions():
    code, out, _ = await run("--version")
    assert code == 0
    (distribution, *_) = importlib.metadata.packages_distributions()["router"]
    assert out == f"llm-router {importlib.metadata.version(distribution)}\n"


async def test_check_says_which_file_it_checks_by_default(tmp_path):
    code, out, _ = await run("check")
    assert code == 0
    assert out.startswith("checking routes.yaml (the default; pass a path")
    assert "config  routes.yaml" in out

    chosen = tmp_path / "mine.yaml"
    chosen.write_text((REPO / "routes.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    code, out, _ = await run("check", env={**ENV, "LLM_ROUTER_CONFIG": str(chosen)})
    assert code == 0
    assert out.startswith(f"checking {chosen} ($LLM_ROUTER_CONFIG;")
    assert f"config  {chosen}" in out

    code, out, _ = await run("check", "routes.yaml", env={**ENV, "LLM_ROUTER_CONFIG": "gone"})
    assert code == 0 and "checking" not in out  # a path given is the path checked


async def test_schema_prints_the_shipped_json_schema():
    code, out, _ = await run("schema")
    assert code == 0
    shipped = (REPO / "router" / "config" / "routes.schema.json").read_text(encoding="utf-8")
    assert json.loads(out) == json.loads(shipped)
    assert json.loads(out)["required"] == ["keys", "models"]


async def test_check_names_a_tab_and_a_near_key_name(tmp_path):
    text = (REPO / "routes.yaml").read_text(encoding="utf-8")
    tabbed = tmp_path / "tabbed.yaml"
    tabbed.write_text(text.replace("\n  port:", "\n\tport:", 1), encoding="utf-8")
    code, _, err = await run("check", str(tabbed))
    assert code == 1 and "a tab character: YAML indents with spaces only" in err

    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(text.replace("{key: openai-backup", "{key: openai-bakup"), "utf-8")
    code, _, err = await run("check", str(misspelt))
    assert code == 1 and "unknown key 'openai-bakup' (did you mean 'openai-backup'?)" in err


def _readme_sim_commands() -> list[list[str]]:
    """README's "Try your own routes.yaml without keys" block, one argv per command."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Try your own routes.yaml without keys", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


async def test_the_readme_commands_run_the_example_routes_yaml_on_the_simulator(
    unused_tcp_port: int,
) -> None:
    sim_argv, serve_argv, sleep_argv, curl_argv = _readme_sim_commands()
    assert sim_argv[:3] == ["python", "-m", "router.sim"] and sim_argv[-1] == "&"
    assert sleep_argv[0] == "sleep" and curl_argv[0] == "curl"
    port = str(unused_tcp_port)
    sim_args = [port if arg == "9000" else arg for arg in sim_argv[3:-1]]
    assignments = [arg for arg in serve_argv if re.fullmatch(r"[A-Z_0-9]+=.*", arg)]
    command = serve_argv[len(assignments) :]
    assert command[:4] == ["llm-router", "serve", "--config", "routes.yaml"]
    assert command[-1] == "&"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GROQ_API_KEY", None)
    for assignment in assignments:
        name, value = assignment.split("=", 1)
        env[name] = value.replace(":9000/", f":{port}/")
    body = json.loads(curl_argv[curl_argv.index("-d") + 1])
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.sim", *sim_args,
        stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        async with asyncio.timeout(15):
            listening = (await sim.stdout.readline()).decode()
        assert listening == f"listening on http://127.0.0.1:{port}/v1\n"
        config = REPO / "routes.yaml"  # the example, as shipped
        async with router_process(config, env=env) as router:
            served = []
            for _ in range(8):
                completion = await client(router.url).chat.completions.create(**body)
                served.append(completion.choices[0].message.content)
            router.signal()
            assert await router.exit_code() == 0
    finally:
        sim.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await sim.wait()
    assert served[0] in ("Hello from main via gpt-5.4.", "Hello from backup via gpt-5.4.")
    # 3 requests a minute on each gpt-5.4 key: the fallback's routes serve the rest.
    assert (
        sorted(served[:6])
        == ["Hello from backup via gpt-5.4."] * 3 + ["Hello from main via gpt-5.4."] * 3
    )
    assert served[6:] == ["Hello from groq via llama-3.3-70b-versatile."] * 2
    skipped = [e["skipped"] for e in router.events if e["event"] == "request"]
    assert any("headroom spent" in note for notes in skipped if notes for note in notes)
