"""POST /admin/reload (SIGHUP is in test_cli.py): routes.yaml read again, swapped in
between requests; state carried over for unchanged routes, dropped for removed ones."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import re
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import structlog
from aiohttp import web

from router import reload as reloading
from router.config import load_config
from router.handlers.state import APP_STATE
from router.server import bound_port, start
from router.sim import Fault, SimKey
from router.telemetry.logs import configure_logging, reset_logging
from router.upstream import Upstream
from router.upstream.translate import egress as translate_egress
from tests.configs import key, model, route, routes_yaml, sim_key, sim_keys
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state, ask, client, raw_upstream


@asynccontextmanager
async def router_for(path: Path) -> AsyncIterator[str]:
    """A router started from the file at `path`, as `llm-router serve --config` does."""
    runner = await start(load_config(path), "127.0.0.1", 0, config_path=path)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


async def reload(url: str, **headers: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/admin/reload", headers=headers) as response,
    ):
        return response.status, await response.json()


def readers() -> list[threading.Thread]:
    """The threads reading routes.yaml for a reload (router/reload.py)."""
    return [t for t in threading.enumerate() if t.name == "reload-read"]


async def reads_returned() -> None:
    for reader in readers():
        await asyncio.to_thread(reader.join, 5)


def a_and_b(sim_url: str, **sections: Any) -> str:
    """gpt-4o on keys a and then b."""
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B),
        models={"gpt-4o": model(route("a", "gpt-4o"), route("b", "gpt-4o", priority=2))},
        **sections,
    )


def a_and_c(sim_url: str) -> str:
    """gpt-4o on key a only (b is gone), and a new model, gpt-4o-mini, on key c."""
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_C),
        models={
            "gpt-4o": model(route("a", "gpt-4o")),
            "gpt-4o-mini": model(route("c", "gpt-4o-mini")),
        },
    )


async def chat_status(url: str) -> int:
    body = {"model": "gpt-4o", "messages": HI}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        return response.status


async def test_reload_adds_a_model_keeps_a_kept_routes_cooldown_and_drops_a_removed_ones(
    stack, tmp_path
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    async with router_for(path) as url:
        sim.inject("a", Fault.rate_limit(600))
        sim.inject("b", Fault.rate_limit(600))
        assert await chat_status(url) == 429  # both routes cooling down now
        path.write_text(a_and_c(sim_url))
        status, answer = await reload(url)
        assert (status, answer) == (200, {
            "status": "reloaded",
            "models": ["gpt-4o", "gpt-4o-mini"],
            "routes_added": ["c/gpt-4o-mini"],
            "routes_removed": ["b/gpt-4o"],
            "routes_kept": 1,
            "routes_reset": [],
            "needs_restart": [],
        })  # fmt: skip
        routes, keys = await admin_state(url)
        assert set(routes) == {"a/gpt-4o", "c/gpt-4o-mini"} and set(keys) == {"a", "c"}
        assert routes["a/gpt-4o"]["state"] == "cooling_down"  # kept, with its cooldown
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as page:
            metrics = await page.text()
        # The new model's series exist before its first request, at zero, as at start, and
        # its pair in the route table; the removed route's state gauges are gone.
        assert 'llm_router_requests_total{model="gpt-4o-mini",outcome="served"} 0.0' in metrics
        assert (
            'llm_router_model_route{key="c",model="gpt-4o-mini",route="c/gpt-4o-mini"}' in metrics
        )
        assert 'route="b/gpt-4o"' not in metrics.split("# HELP llm_router_route_state")[1]
        _, completion = await ask(url, model="gpt-4o-mini")
        assert completion.choices[0].message.content == "Hello from c via gpt-4o-mini."
        # b comes back without the cooldown it had: its state went with it; a keeps its own.
        path.write_text(a_and_b(sim_url))
        assert (await reload(url))[1]["routes_added"] == ["b/gpt-4o"]
        routes, _ = await admin_state(url)
        assert routes["b/gpt-4o"]["state"] == "available"
        assert routes["a/gpt-4o"]["state"] == "cooling_down"
        _, completion = await ask(url)
        assert completion.choices[0].message.content == "Hello from b via gpt-4o."


async def test_a_key_whose_headers_change_is_another_account_and_starts_clean(stack, tmp_path):
    """An organisation or project header names another account, with its own limits: a
    cooldown learnt under the old one must not hold the new one back."""
    sim, sim_url = await stack.sim(SIM_A)

    def config(org: str) -> str:
        return routes_yaml(
            keys=[sim_key(SIM_A, sim_url, headers={"OpenAI-Organization": org})],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )

    path = tmp_path / "routes.yaml"
    path.write_text(config("org-one"))
    async with router_for(path) as url:
        sim.inject("a", Fault.rate_limit(600))
        assert await chat_status(url) == 429
        path.write_text(config("org-one") + "\n# unchanged\n")
        assert (await reload(url))[1]["routes_kept"] == 1
        routes, _ = await admin_state(url)
        assert routes["a/gpt-4o"]["state"] == "cooling_down"  # the same account: kept
        path.write_text(config("org-two"))
        status, answer = await reload(url)
        assert (status, answer["routes_kept"], answer["routes_reset"]) == (200, 0, ["a/gpt-4o"])
        routes, _ = await admin_state(url)
        assert routes["a/gpt-4o"]["state"] == "available"  # another account: clean
        sim.clear("a")
        _, completion = await ask(url)
        assert completion.choices[0].message.content == "Hello from a via gpt-4o."


async def test_a_broken_file_is_rejected_with_its_line_and_the_old_config_serves(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    async with router_for(path) as url:
        text = a_and_b(sim_url).replace("key: b\n", "key: bee\n")
        assert "key: bee" in text
        path.write_text(text)
        line = text.splitlines().index("    - key: bee") + 1
        status, answer = await reload(url)
        assert status == 422
        assert answer == {
            "status": "rejected",
            "error": f"routes.yaml:{line}: models.gpt-4o.routes[1].key: unknown key 'bee'",
        }
        _, completion = await ask(url)
        assert completion.choices[0].message.content.startswith("Hello from ")
        routes, _ = await admin_state(url)
        assert set(routes) == {"a/gpt-4o", "b/gpt-4o"}


async def test_a_fifo_put_at_the_path_is_rejected_and_the_next_reload_works(stack, tmp_path):
    """A FIFO at the config's path held the reload's lock for ever: no later reload took,
    and the process could not stop."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    async with router_for(path) as url:
        path.unlink()
        os.mkfifo(path)
        status, answer = await reload(url)
        assert status == 422
        assert answer["error"] == f"{path}: cannot read: not a regular file (a FIFO)"
        path.unlink()
        only_a = {"gpt-4o": model(route("a", "gpt-4o"))}
        path.write_text(routes_yaml(keys=sim_keys(sim_url, SIM_A), models=only_a))
        status, answer = await reload(url)
        assert status == 200, answer
        routes, _ = await admin_state(url)
        assert set(routes) == {"a/gpt-4o"}


async def test_a_read_that_hangs_fails_the_reload_in_time_and_the_next_one_works(
    stack, tmp_path, monkeypatch
):
    """A routes.yaml on a mount that stopped answering held the reload's lock for ever:
    no later reload took, and the exit waited on the reading thread. The read is
    bounded (READ_SECONDS, short here), on a daemon thread."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    mount = threading.Event()  # the mount answers again when set
    real_open = os.open

    def hanging_open(name: Any, *args: Any, **kwargs: Any) -> int:
        if str(name) == str(path) and not mount.is_set():
            mount.wait(30)
        return real_open(name, *args, **kwargs)

    async with router_for(path) as url:
        monkeypatch.setattr(reloading, "READ_SECONDS", 0.5)
        monkeypatch.setattr(os, "open", hanging_open)
        try:
            status, answer = await reload(url)
            assert status == 422
            assert answer["error"] == f"reading {path} took over 0.5 s"
        finally:
            mount.set()
        await reads_returned()  # the next reload starts once the hung read is over
        status, answer = await reload(url)
        assert status == 200, answer


async def test_a_reload_starts_no_second_read_while_one_is_still_hung(stack, tmp_path, monkeypatch):
    """Each reload that timed out left its thread blocked on the hung mount, and the
    next one started another: reloads sent by a script piled up threads without bound.
    While a read given up on has not returned, a reload fails at once, as a timed-out
    one does (422, `reload_failed`), and starts none; once it returns, reloads work."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    mount = threading.Event()  # the mount answers again when set
    opened: list[str] = []
    real_open = os.open

    def hanging_open(name: Any, *args: Any, **kwargs: Any) -> int:
        if str(name) == str(path) and not mount.is_set():
            opened.append(threading.current_thread().name)
            mount.wait(30)
        return real_open(name, *args, **kwargs)

    still_reading = (
        f"the read of {re.escape(str(path))} started [0-9]+ s ago has not returned; "
        "not starting another"
    )

    async with router_for(path) as url:
        monkeypatch.setattr(reloading, "READ_SECONDS", 0.5)
        monkeypatch.setattr(os, "open", hanging_open)
        try:
            status, answer = await reload(url)
            assert (status, answer["error"]) == (422, f"reading {path} took over 0.5 s")
            with structlog.testing.capture_logs() as logs:
                for _ in range(3):  # each at once: its answer is not READ_SECONDS' error
                    status, answer = await reload(url)
                    assert status == 422
                    assert re.fullmatch(still_reading, answer["error"]), answer
            assert [e["event"] for e in logs] == ["reload_failed"] * 3
            assert logs[-1]["error"] == answer["error"]
            assert opened == ["reload-read"] and len(readers()) == 1
        finally:
            mount.set()
        await reads_returned()
        status, answer = await reload(url)
        assert status == 200, answer


async def test_a_request_in_flight_finishes_on_the_config_it_started_with(stack, tmp_path):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url, timeouts={"first_byte": 1.0}))
    async with router_for(path) as url:
        # a never answers: after its first_byte timeout the request fails over to b, a
        # route of the config it started on, which the reload has removed by then.
        sim.inject("a", Fault.hang())
        pending = asyncio.create_task(ask(url))
        async with asyncio.timeout(5):
            while sim.stats["a"].requests == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        path.write_text(
            routes_yaml(
                keys=sim_keys(sim_url, SIM_A, SIM_C),
                models={"gpt-4o-mini": model(route("c", "gpt-4o-mini"))},
            )
        )
        assert (await reload(url))[0] == 200
        assert not pending.done()
        headers, completion = await pending
        assert completion.choices[0].message.content == "Hello from b via gpt-4o."
        assert headers["x-router-route"] == "b/gpt-4o"
        with pytest.raises(openai.NotFoundError):  # a request begun now: the new config
            await client(url).chat.completions.create(model="gpt-4o", messages=HI)


async def test_settings_read_only_at_start_are_reported_as_needing_a_restart(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    async with router_for(path) as url:
        path.write_text(
            a_and_b(
                sim_url,
                server={"port": 4321, "max_connections": 10, "drain_timeout": 5},
                limits={"max_event_bytes": 4096},
                telemetry={"traces": {"sample_rate": 0.5}},
            )
        )
        status, answer = await reload(url)
        assert status == 200
        assert answer["needs_restart"] == [
            "server.port",
            "server.max_connections",
            "limits.max_event_bytes",
            "telemetry.traces.sample_rate",
        ]
        _, completion = await ask(url)  # still served, on the port it listens on
        assert completion.choices[0].message.content.startswith("Hello from ")


async def test_reload_takes_an_admin_key_not_a_client_key(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(
        a_and_b(
            sim_url,
            server={"client_keys": ["client-key-123456"], "admin_keys": ["admin-key-123456"]},
        )
    )
    async with router_for(path) as url:
        assert (await reload(url))[0] == 401
        assert (await reload(url, Authorization="Bearer client-key-123456"))[0] == 401
        status, answer = await reload(url, Authorization="Bearer admin-key-123456")
        assert (status, answer["status"]) == (200, "reloaded")


async def test_a_key_added_by_a_reload_is_redacted_from_the_log(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    secret = "plain-new-secret-value-42"  # no known key shape: only the config names it
    captured = io.StringIO()
    configure_logging(secrets=[SIM_A.api_key], stream=captured, cache_loggers=False)
    try:
        async with router_for(path) as url:
            keys = [*sim_keys(sim_url, SIM_A, SIM_B), key("n", sim_url, api_key=secret)]
            models = {"gpt-4o": model(route("a", "gpt-4o")), "n": model(route("n", "gpt-4o"))}
            path.write_text(routes_yaml(keys=keys, models=models))
            assert (await reload(url))[0] == 200
            structlog.get_logger("test").warning("echo", detail=f"the upstream said {secret}")
    finally:
        reset_logging()
    assert '"detail":"the upstream said [redacted]"' in captured.getvalue()
    assert secret not in captured.getvalue()


async def test_a_router_not_started_from_a_file_says_so(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(a_and_b(sim_url))
    assert await reload(url) == (409, {
        "status": "rejected", "error": "this router was not started from a routes.yaml file",
    })  # fmt: skip


async def test_a_replaced_config_is_freed_once_its_requests_are_done(stack, tmp_path):
    """Nothing of a config outlives its requests: a process reloaded every few minutes
    for months must not hold every config it ever ran until exit."""
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    gc.collect()
    before = _upstreams()
    runner = await start(load_config(path), "127.0.0.1", 0, config_path=path)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"
        current = runner.app[APP_STATE]
        assert (await chat_status(url)) == 200
        replaced = [weakref.ref(current.state.failover)]
        for yaml in (a_and_c(sim_url), a_and_b(sim_url)):
            path.write_text(yaml)
            assert (await reload(url))[0] == 200
            assert (await chat_status(url)) == 200
            replaced.append(weakref.ref(current.state.failover))
        gc.collect()
        assert [ref() is None for ref in replaced] == [True, True, False]
        assert _upstreams() == before + 1  # the current config's
    finally:
        await runner.cleanup()


def _upstreams() -> int:
    return sum(isinstance(thing, Upstream) for thing in gc.get_objects())


@pytest.mark.timeout(60)  # the first translated request imports litellm (~4 s)
async def test_a_translated_keys_client_is_closed_once_a_reload_replaced_it_and_its_stream_ended(
    stack, tmp_path
):
    """A key's own litellm client (its connections to the provider) goes when a reload
    changes the key's secret, but only once the stream still using it has ended."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)

    def openai_key_a(secret: str) -> str:  # Messages on it: litellm's OpenAI SDK client
        return routes_yaml(
            keys=[key("a", sim_url, api_key=secret)],
            models={"claude": model(route("a", "gpt-4o"))},
            timeouts={"idle": 1.0},
        )

    def messages(stream: bool) -> dict[str, Any]:
        return {"model": "claude", "max_tokens": 50, "messages": HI, "stream": stream}

    path = tmp_path / "routes.yaml"
    path.write_text(openai_key_a(SIM_A.api_key))
    async with router_for(path) as url, aiohttp.ClientSession() as session:
        sim.inject("a", Fault.stream_stall(after_chunks=1))
        async with session.post(f"{url}/v1/messages", json=messages(True)) as stalled:
            assert stalled.status == 200
            assert (await stalled.content.readline()).startswith(b"event: ")
            [old] = translate_egress.open_clients()
            path.write_text(openai_key_a(SIM_B.api_key))
            assert (await reload(url))[0] == 200
            assert translate_egress.open_clients() == [old]  # the stream still reads on it
            assert not old.is_closed()
            async with session.post(f"{url}/v1/messages", json=messages(False)) as answer:
                assert answer.status == 200  # on a client of the new secret
                text = (await answer.json())["content"][0]["text"]
                assert text == "Hello from b via gpt-4o."
            await stalled.read()  # the stall ends at the idle timeout
        async with asyncio.timeout(5):
            while old in translate_egress.open_clients():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert old.is_closed()
        [new] = translate_egress.open_clients()
        assert not new.is_closed() and new.api_key == SIM_B.api_key


def _series(page: str, name: str, **labels: str) -> list[str]:
    """The sample lines of `name` whose labels include `labels`."""
    wanted = [f'{label}="{value}"' for label, value in labels.items()]
    return [
        line
        for line in page.splitlines()
        if line.startswith(name + "{") and all(w in line.split("} ")[0] for w in wanted)
    ]


async def test_a_key_on_another_account_after_a_reload_no_longer_shows_disabled(stack, tmp_path):
    """Key a is out for a 401; routes.yaml gives it another account (a new key, or here
    another organisation) and a reload starts it clean: its route and key gauges say
    so at once, so the key-disabled alert stops firing (it showed disabled until the
    route next got state, which an idle backup key may never)."""
    from tests.integration.test_metrics import scrape

    sim, sim_url = await stack.sim(SIM_A, SIM_B)

    def config(org: str) -> str:
        return routes_yaml(
            keys=[
                sim_key(SIM_A, sim_url, headers={"OpenAI-Organization": org}),
                *sim_keys(sim_url, SIM_B),
            ],
            models={"gpt-4o": model(route("a", "gpt-4o"), route("b", "gpt-4o", priority=2))},
        )

    path = tmp_path / "routes.yaml"
    path.write_text(config("org-one"))
    async with router_for(path) as url:
        sim.inject("a", Fault.auth())
        assert await chat_status(url) == 200  # b served
        page = await scrape(url)
        on_a = 'llm_router_route_state{key="a",provider="openai",route="a/gpt-4o",state='
        assert _series(page, "llm_router_route_state", route="a/gpt-4o", state="disabled") == [
            on_a + '"disabled"} 1.0'
        ]
        assert _series(page, "llm_router_key_disabled", key="a", reason="auth")[0].endswith(" 1.0")
        sim.clear("a")
        path.write_text(config("org-two"))
        assert (await reload(url))[0] == 200
        page = await scrape(url)
        assert _series(page, "llm_router_route_state", route="a/gpt-4o") == [
            on_a + '"available"} 1.0'
        ]
        assert all(
            line.endswith(" 0.0") for line in _series(page, "llm_router_key_disabled", key="a")
        )


async def test_a_key_moved_to_another_provider_counts_under_it(stack, tmp_path):
    """Key a goes from OpenAI to Azure under the same name: its attempts count under
    provider="azure" once reloaded, and its route state shows once, under it."""
    from tests.integration.test_metrics import scrape

    az = SimKey(name="a", api_key=SIM_A.api_key)
    sim, sim_url = await stack.sim(az)

    def config(provider: str) -> str:
        base = sim_url if provider == "openai" else sim.root
        return routes_yaml(
            keys=[sim_key(az, base, provider=provider)],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )

    path = tmp_path / "routes.yaml"
    path.write_text(config("openai"))
    async with router_for(path) as url:
        assert await chat_status(url) == 200
        path.write_text(config("azure"))
        assert (await reload(url))[0] == 200
        assert await chat_status(url) == 200
        assert sim.requests[-1].path == "/openai/deployments/gpt-4o/chat/completions"
        page = await scrape(url)
        attempts = "llm_router_upstream_attempts_total"
        for provider in ("openai", "azure"):
            (line,) = _series(page, attempts, route="a/gpt-4o", provider=provider, outcome="ok")
            assert line.endswith(" 1.0"), line
        (state,) = _series(page, "llm_router_route_state", route="a/gpt-4o")
        assert 'provider="azure"' in state and state.endswith(" 1.0")


async def test_the_model_route_table_on_metrics_follows_a_reload(stack, tmp_path):
    """LLMRouterModelUnavailable joins route state with llm_router_model_route: after a
    reload moves route b from gpt-4o to a new model, gpt-4o's pairs are a's alone. The
    counters' label sets, which the alert read before, kept (gpt-4o, b/gpt-4o) for good
    (helper-67)."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    path = tmp_path / "routes.yaml"
    path.write_text(a_and_b(sim_url))
    async with router_for(path) as url:
        before = await model_routes(url)
        path.write_text(
            routes_yaml(
                keys=sim_keys(sim_url, SIM_A, SIM_B),
                models={
                    "gpt-4o": model(route("a", "gpt-4o")),
                    "other": model(route("b", "gpt-4o")),
                },
            )
        )
        assert (await reload(url))[0] == 200
        after = await model_routes(url)
    assert before == {("gpt-4o", "a/gpt-4o", "a"), ("gpt-4o", "b/gpt-4o", "b")}
    assert after == {("gpt-4o", "a/gpt-4o", "a"), ("other", "b/gpt-4o", "b")}


async def model_routes(url: str) -> set[tuple[str, str, str]]:
    """The (model, route, key) of each llm_router_model_route sample at 1."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        page = await response.text()
    found = set()
    for line in page.splitlines():
        if line.startswith("llm_router_model_route{") and line.endswith(" 1.0"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            found.add((labels["model"], labels["route"], labels["key"]))
    return found


async def test_a_request_of_a_removed_route_failing_after_the_reload_leaves_no_state(
    stack, tmp_path
):
    """The reload forgot route r's state; a request begun before it then got its 429 and
    cooled the route down again, so r came back cooling down when a later reload named
    it again (helper-67). The old config's tracker now records nothing for r."""
    answered = asyncio.Event()

    async def slow_429(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(1.0)
        answered.set()
        body = {"error": {"message": "slow down", "type": "rate_limit_error",
                          "code": "rate_limit_exceeded"}}  # fmt: skip
        return web.json_response(body, status=429, headers={"retry-after": "30"})

    async with raw_upstream("/v1/chat/completions", slow_429) as upstream:
        with_r = routes_yaml(
            keys=[key("r", f"{upstream}/v1", api_key="sk-test-r-000001")],
            models={"gpt-4o": model(route("r", "gpt-4o"))},
            failover={"max_wait": 0},  # the 429 goes back at once
        )
        _sim, sim_url = await stack.sim(SIM_A)
        without_r = routes_yaml(
            keys=sim_keys(sim_url, SIM_A), models={"gpt-4o": model(route("a", "gpt-4o"))}
        )
        path = tmp_path / "routes.yaml"
        path.write_text(with_r)
        async with router_for(path) as url:
            pending = asyncio.create_task(chat_status(url))
            await asyncio.sleep(0.3)  # the request is at r, waiting for its answer
            path.write_text(without_r)
            assert (await reload(url))[1]["routes_removed"] == ["r/gpt-4o"]
            await answered.wait()
            assert await pending == 429
            path.write_text(with_r)
            assert (await reload(url))[1]["routes_added"] == ["r/gpt-4o"]
            routes, _ = await admin_state(url)
    assert routes["r/gpt-4o"]["state"] == "available"
