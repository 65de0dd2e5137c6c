"""Metrics move exactly as the traffic says, and the live page passes promtool."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from router.handlers.scrape import NEW_SERIES_PER_STEP
from router.sim import Fault, SimKey, SimProvider
from router.telemetry.metrics import SCRAPE_CHUNK
from tests import configs
from tests.configs import preferring_a, two_keys_config
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, client


class Reader:
    """Sample values from the app's own registry, by metric and labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, f"no sample {name}{labels}"
        return value

    def route(self, name: str, route: str, **labels: str) -> float:
        key = route.split("/")[0]
        return self(name, route=route, key=key, provider="openai", **labels)

    def absent(self, name: str, route: str | None = None, **labels: str) -> bool:
        """No such series: the combination never happened, so it was never created."""
        if route is not None:
            labels |= {"route": route, "key": route.split("/")[0], "provider": "openai"}
        return self.registry.get_sample_value(name, labels) is None


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def read(registry: CollectorRegistry) -> Reader:
    return Reader(registry)


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return await response.text()


async def test_failover_on_429_counts_attempts_failovers_and_the_cooling_route(
    stack, clock, registry, read
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock, registry=registry)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    completion = await client(url).chat.completions.create(model="gpt-4o", messages=HI)

    assert read("llm_router_requests_total", model="gpt-4o", outcome="served_after_failover") == 1
    assert read("llm_router_requests_total", model="gpt-4o", outcome="served") == 0
    attempts = "llm_router_upstream_attempts_total"
    assert read.route(attempts, "a/gpt-4o", model="gpt-4o", outcome="rate_limited") == 1
    assert read.route(attempts, "b/gpt-4o", model="gpt-4o", outcome="ok") == 1
    # No ok on a: it never answered (the alert rules' route table is llm_router_model_route)
    assert read.absent(attempts, "a/gpt-4o", model="gpt-4o", outcome="ok")
    assert read.absent(attempts, "b/gpt-4o", model="gpt-4o", outcome="rate_limited")
    failovers = "llm_router_failovers_total"
    assert read.route(failovers, "a/gpt-4o", model="gpt-4o", reason="rate_limited") == 1
    assert read.absent(failovers, "b/gpt-4o", model="gpt-4o", reason="rate_limited")
    assert read.absent(failovers, "a/gpt-4o", model="gpt-4o", reason="server_error")
    upstream = "llm_router_upstream_duration_seconds_count"
    assert read(upstream, model="gpt-4o", provider="openai") == 2  # both attempts
    assert read("llm_router_request_duration_seconds_count", model="gpt-4o") == 1
    tokens = "llm_router_tokens_total"
    assert read.route(tokens, "b/gpt-4o", model="gpt-4o", direction="input") == (
        completion.usage.prompt_tokens
    )
    assert read.route(tokens, "b/gpt-4o", model="gpt-4o", direction="output") == (
        completion.usage.completion_tokens
    )
    assert read.absent(tokens, "a/gpt-4o", model="gpt-4o", direction="output")  # no answer
    assert read("llm_router_requests_in_flight", model="gpt-4o") == 0

    await scrape(url)  # route gauges are refreshed at scrape time
    state = "llm_router_route_state"
    assert read.route(state, "a/gpt-4o", state="cooling_down") == 1
    assert read.route(state, "a/gpt-4o", state="available") == 0
    assert read.route(state, "b/gpt-4o", state="available") == 1
    assert read.route("llm_router_route_available_in_seconds", "a/gpt-4o") == 30
    remaining = "llm_router_route_headroom_remaining"
    assert read.route(remaining, "a/gpt-4o", dimension="requests") == 0  # the 429 said so
    # b has state too (its answer); it has not been anything but available
    assert read.absent(state, "b/gpt-4o", state="cooling_down")

    clock.advance(30.5)
    await scrape(url)
    assert read.route(state, "a/gpt-4o", state="available") == 1
    assert read.route("llm_router_route_available_in_seconds", "a/gpt-4o") == 0


async def test_fallback_and_exhaustion_are_counted_by_outcome(stack, clock, registry, read):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(
        two_keys_config(sim_url, fallback=["gpt-4o-mini"], failover={"max_wait": 0}),
        clock=clock,
        registry=registry,
    )  # fmt: skip  (max_wait 0: the 429 at once; the FakeClock does not move while waiting)
    sim.inject("a", Fault.rate_limit(retry_after=20))
    sim.inject("b", Fault.rate_limit(retry_after=20))
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert read("llm_router_requests_total", model="gpt-4o", outcome="served_by_fallback") == 1
    assert read("llm_router_fallbacks_total", from_model="gpt-4o", to_model="gpt-4o-mini") == 1

    sim.inject("c", Fault.rate_limit(retry_after=5))
    with pytest.raises(openai.RateLimitError):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert read("llm_router_requests_total", model="gpt-4o", outcome="exhausted") == 1
    # the second request found gpt-4o's routes cooling and went straight to the fallback
    assert read("llm_router_fallbacks_total", from_model="gpt-4o", to_model="gpt-4o-mini") == 2


async def test_dead_key_shows_disabled_with_its_reason(stack, clock, registry, read):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock, registry=registry)
    sim.inject("a", Fault.insufficient_quota())
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert read.route("llm_router_failovers_total", "a/gpt-4o", model="gpt-4o", reason="quota")
    await scrape(url)
    disabled = "llm_router_key_disabled"
    assert read(disabled, key="a", provider="openai", reason="quota") == 1
    # created when a key is first out for a reason
    assert read.absent(disabled, key="a", provider="openai", reason="auth")
    assert read.absent(disabled, key="b", provider="openai", reason="quota")
    assert read.route("llm_router_route_state", "a/gpt-4o", state="disabled") == 1
    assert read.route("llm_router_route_available_in_seconds", "a/gpt-4o") == 3600


async def test_server_errors_and_bad_input_are_counted_without_new_series(
    stack, clock, registry, read
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url), clock=clock, registry=registry)
    sim.inject("a", Fault.server_error(500))
    sim.inject("b", Fault.server_error(502))
    with pytest.raises(openai.InternalServerError):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert read("llm_router_requests_total", model="gpt-4o", outcome="failed") == 1
    for route in ("a/gpt-4o", "b/gpt-4o"):
        attempts = "llm_router_upstream_attempts_total"
        assert read.route(attempts, route, model="gpt-4o", outcome="server_error") == 1

    with pytest.raises(openai.NotFoundError):
        await client(url).chat.completions.create(model="random-123", messages=HI)
    async with aiohttp.ClientSession() as session:
        await session.post(f"{url}/v1/chat/completions", data=b"{not json")
    assert read("llm_router_requests_total", model="_unknown", outcome="rejected") == 2
    page = await scrape(url)
    assert "random-123" not in page


async def test_streams_count_time_to_first_token_and_usage(stack, registry, read):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), registry=registry)
    stream = await client(url).chat.completions.create(
        model="gpt-4o", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    usage = [chunk.usage async for chunk in stream if chunk.usage][-1]
    ttft = "llm_router_time_to_first_token_seconds_count"
    assert read(ttft, model="gpt-4o") == 1  # per model: buckets per route were most of the page
    # The client has the last byte before the router has done its bookkeeping.
    served = ("llm_router_requests_total", {"model": "gpt-4o", "outcome": "served"})
    async with asyncio.timeout(5):
        while read(served[0], **served[1]) != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    tokens = "llm_router_tokens_total"
    assert read.route(tokens, "a/gpt-4o", model="gpt-4o", direction="output") == (
        usage.completion_tokens
    )
    assert read.route(tokens, "a/gpt-4o", model="gpt-4o", direction="input") == (
        usage.prompt_tokens
    )


async def test_in_flight_counts_a_pending_request(stack, registry, read):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), registry=registry)
    sim.inject("a", Fault.delay(1.0))
    pending = asyncio.create_task(client(url).chat.completions.create(model="gpt-4o", messages=HI))
    async with asyncio.timeout(5):
        # the gauge appears with the model's first request
        while registry.get_sample_value("llm_router_requests_in_flight", {"model": "gpt-4o"}) != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await pending
    assert read("llm_router_requests_in_flight", model="gpt-4o") == 0


async def test_live_metrics_page_passes_promtool_check_metrics(stack, clock):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url, fallback=["gpt-4o-mini"]), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=10))
    for _ in range(3):
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    page = await scrape(url)
    families = {f.name for f in text_string_to_metric_families(page)}
    assert {"llm_router_requests", "llm_router_route_state", "process_resident_memory_bytes"} <= (
        families
    )
    process = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        output, _ = await process.communicate(page.encode())
    assert process.returncode == 0, output.decode()


async def test_a_series_appears_when_it_first_has_something_to_say(stack, registry, read):
    """A fresh page holds only what an alert needs before traffic (requests by outcome,
    the model-route table, each route's `available`), never a route x outcome or
    reason that did not happen, and no `_created` companions."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url), registry=registry)
    fresh = await scrape(url)
    assert "_created" not in fresh
    assert read("llm_router_requests_total", model="gpt-4o", outcome="failed") == 0
    attempts = "llm_router_upstream_attempts_total"
    assert attempts not in samples(fresh)
    assert read.route("llm_router_route_state", "b/gpt-4o", state="available") == 1
    for absent in (
        "llm_router_failovers_total",
        "llm_router_tokens_total",
        "llm_router_upstream_duration_seconds_count",
        "llm_router_time_to_first_token_seconds_count",
        "llm_router_route_headroom_remaining",
        "llm_router_route_available_in_seconds",
        "llm_router_key_disabled",
        'outcome="server_error"',
        'state="cooling_down"',
    ):
        assert absent not in samples(fresh), absent

    sim.inject("a", Fault.server_error(500))
    await client(url).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert read.route(attempts, "c/gpt-4o-mini", model="gpt-4o-mini", outcome="ok") == 1
    page = await scrape(url)
    assert "_created" not in page
    assert read.route("llm_router_tokens_total", "c/gpt-4o-mini", model="gpt-4o-mini",
                      direction="input") > 0  # fmt: skip
    # a 500 on a, which gpt-4o-mini does not use: a has said nothing yet
    on_a = [line.split(" ")[0] for line in samples(page).splitlines() if '"a/gpt-4o"' in line]
    assert sorted(on_a) == [
        'llm_router_model_route{key="a",model="gpt-4o",route="a/gpt-4o"}',
        'llm_router_route_state{key="a",provider="openai",route="a/gpt-4o",state="available"}',
    ]
    assert read.absent("llm_router_route_available_in_seconds", "a/gpt-4o")


def samples(page: str) -> str:
    """The page without its HELP and TYPE lines."""
    return "\n".join(line for line in page.splitlines() if not line.startswith("#"))


class TickSpy:
    """A collector that notes, when the page collects it, how often the loop had run a
    ticker task by then."""

    def __init__(self, ticks: list[int]) -> None:
        self.ticks = ticks
        self.seen: list[int] = []

    def collect(self) -> list[Any]:
        self.seen.append(self.ticks[0])
        return []


async def test_the_loop_runs_other_tasks_while_a_page_renders(stack, registry):
    """A scrape must not hold the event loop for the whole render (2.9 s at 2,000 routes
    before): the page is rendered in parts and the loop runs between them. Collectors
    registered before and after the router's own see a ticker task advance in between.
    bench/metrics_scrape.py measures the stall itself."""
    ticks = [0]
    first = TickSpy(ticks)
    registry.register(first)
    # 300 routes no request will use (nothing listens on port 9): 300 startup series
    # each for attempts and route state, more than a part of the page holds
    models = {f"m{i:03d}": configs.model(configs.route("a", f"m{i:03d}")) for i in range(300)}
    config = configs.routes_yaml(
        keys=[configs.key("a", "http://127.0.0.1:9/v1", api_key="sk-a")], models=models
    )
    url = await stack.router(config, registry=registry)
    last = TickSpy(ticks)
    registry.register(last)

    async def tick() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        page = await scrape(url)
    finally:
        ticker.cancel()
    assert 'route="a/m299"' in page
    assert len(first.seen) == len(last.seen) == 1
    assert last.seen[0] > first.seen[0]  # the loop ran the ticker mid-render


async def test_the_first_scrape_after_many_routes_report_headroom_yields_between_creations(
    stack, clock, registry
):
    """The first scrape after every route has reported headroom creates each route's
    headroom series (at 2,000 routes: 8,000 of them, which held the loop 20 ms at once,
    bench/metrics_scrape.py): the loop runs other tasks after at most
    NEW_SERIES_PER_STEP new series, however many routes a chunk of the refresh holds."""
    routes = SCRAPE_CHUNK + 16  # more than one refresh chunk
    names = [f"m{i:03d}" for i in range(routes)]
    limited = SimKey("a", "sk-sim-key-a-000001", rpm=10**6, tpm=10**9)  # so it reports
    provider = SimProvider(keys=[limited], models=names, clock=clock)
    async with provider.serve() as sim_url:
        models = {name: configs.model(configs.route("a", name)) for name in names}
        config = configs.routes_yaml(keys=configs.sim_keys(sim_url, limited), models=models)
        url = await stack.router(config, clock=clock, registry=registry)
        async with aiohttp.ClientSession() as session:
            for name in names:  # one answer per route, each with its headroom
                body = {"model": name, "messages": HI}
                async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                    assert response.status == 200
        assert headroom_series(registry) == 0  # gauges are refreshed at scrape time

        counts: list[int] = []

        async def tick() -> None:
            while True:
                counts.append(headroom_series(registry))
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        try:
            await scrape(url)
        finally:
            ticker.cancel()
        counts.append(headroom_series(registry))
    assert counts[-1] == 4 * routes
    steps = [after - before for before, after in itertools.pairwise(counts)]
    assert max(steps) <= NEW_SERIES_PER_STEP, steps


def headroom_series(registry: CollectorRegistry) -> int:
    return sum(
        len(family.samples)
        for family in registry.collect()
        if family.name.startswith("llm_router_route_headroom_")
    )
