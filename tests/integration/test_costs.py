"""Costs from provider usage and prices; budgets taking keys and models out."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from router.config import format_route_table, load_config, parse_config
from router.errors import ConfigError
from router.health.budgets import period_ends
from router.server import bound_port, start
from router.wire.usage import usage_from_body
from tests.configs import model, route, routes_yaml, sim_key, sim_keys
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, admin_state, client
from tests.integration.test_reload import reload

# One dollar per input token and two per output token: costs are easy to check by hand.
PRICE = {"input_per_mtok": 1000000, "output_per_mtok": 2000000}


def config(
    sim_url: str,
    *,
    key_a: dict[str, Any] | None = None,
    priced_a: bool = True,
    budget: dict[str, float] | None = None,
) -> str:
    """gpt-4o on a, then b at priority 2, both at PRICE (a unpriced if not priced_a),
    falling back to gpt-4o-mini on c. key_a: more fields for key a; budget: gpt-4o's."""
    route_a = route("a", "gpt-4o", price=PRICE) if priced_a else route("a", "gpt-4o")
    gpt_4o = model(route_a, route("b", "gpt-4o", priority=2, price=PRICE), fallback=["gpt-4o-mini"])
    if budget is not None:
        gpt_4o["budget"] = budget
    return routes_yaml(
        keys=[sim_key(SIM_A, sim_url, **(key_a or {})), *sim_keys(sim_url, SIM_B, SIM_C)],
        models={"gpt-4o": gpt_4o, "gpt-4o-mini": model(route("c", "gpt-4o-mini"))},
    )


class WallClock:
    def __init__(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).timestamp()

    def __call__(self) -> float:
        return self.now


async def test_cost_comes_from_usage_and_the_routes_price(stack):
    registry = CollectorRegistry()
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(config(sim_url), registry=registry)
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    usage = raw.parse().usage
    expected = usage.prompt_tokens * 1 + usage.completion_tokens * 2
    assert float(raw.headers["x-router-cost-usd"]) == expected
    labels = {"model": "gpt-4o", "route": "a/gpt-4o", "key": "a", "provider": "openai"}
    assert registry.get_sample_value("llm_router_spend_usd_total", labels) == expected


async def test_without_a_price_in_routes_yaml_litellms_model_data_prices_it(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(config(sim_url, priced_a=False))
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    usage = raw.parse().usage
    # gpt-4o in litellm's table: $2.50 in and $10 out per million tokens.
    expected = usage.prompt_tokens * 2.5e-6 + usage.completion_tokens * 1e-5
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected, abs=1e-8)


async def test_a_stream_is_costed_from_a_usage_chunk_the_client_never_sees(stack):
    registry = CollectorRegistry()
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(config(sim_url), registry=registry)
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)  # the extra chunk was kept back
    assert all(chunk.choices for chunk in chunks)
    sent = json.loads(sim.requests[-1].body)
    assert sent["stream_options"] == {"include_usage": True}  # asked on its behalf
    labels = {"model": "gpt-4o", "route": "a/gpt-4o", "key": "a", "provider": "openai"}
    async with asyncio.timeout(5):
        while not registry.get_sample_value("llm_router_spend_usd_total", labels):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    input_tokens = registry.get_sample_value(
        "llm_router_tokens_total", {**labels, "direction": "input"}
    )
    assert input_tokens > 0


async def test_a_stream_with_null_stream_options_is_costed_the_same_way(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(config(sim_url))
    stream = await client(url).chat.completions.create(
        model="gpt-4o",
        messages=HI,
        stream=True,
        stream_options=None,  # sent as null
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all(chunk.usage is None and chunk.choices for chunk in chunks)
    sent = json.loads(sim.requests[-1].body)
    assert sent["stream_options"] == {"include_usage": True}


async def test_an_upstream_refusing_stream_options_still_streams_and_is_not_asked_again(stack):
    """Azure before api-version 2024-09-01-preview answers the usage ask with a 400; the
    client never sent the field, so it must not see that 400."""
    refusing = dataclasses.replace(SIM_A, refuses_stream_options=True)
    sim, sim_url = await stack.sim(refusing, SIM_B, SIM_C)
    url = await stack.router(config(sim_url))
    with capture_logs() as logs:
        for _ in range(2):
            stream = await client(url).chat.completions.create(
                model="gpt-4o", messages=HI, stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert chunks and all(chunk.choices for chunk in chunks)
            assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Hello")
    bodies = [json.loads(request.body) for request in sim.requests if request.key_name == "a"]
    # Asked once, refused, sent again without the field; the next stream is not asked.
    assert ["stream_options" in body for body in bodies] == [True, False, False]
    assert sim.stats["a"].rejected == 1 and sim.stats["b"].requests == 0
    warnings = [entry for entry in logs if entry["event"] == "usage_request_refused"]
    assert [(w["key"], w["status"], w["log_level"]) for w in warnings] == [("a", 400, "warning")]


async def test_a_client_that_asks_for_usage_gets_the_upstreams_400_as_its_own(stack):
    refusing = dataclasses.replace(SIM_A, refuses_stream_options=True)
    sim, sim_url = await stack.sim(refusing, SIM_B, SIM_C)
    url = await stack.router(config(sim_url))
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        await client(url).chat.completions.create(
            model="gpt-4o", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    assert sim.stats["a"].requests == 1  # the client's own field: no second try, no failover
    assert sim.stats["b"].requests == 0


async def test_stream_usage_false_keeps_the_ask_from_that_key_only(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(config(sim_url, key_a={"stream_usage": False}))
    stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    assert [chunk async for chunk in stream]
    assert "stream_options" not in json.loads(sim.requests[-1].body)
    assert sim.stats["a"].rejected == 0
    table = format_route_table(
        parse_config(config(sim_url, key_a={"stream_usage": False}), source="r.yaml", environ={})
    )
    assert "(stream_usage: false): their streams have no costs or token counts\n  a\n" in table


def test_stream_usage_applies_to_keys_whose_streams_are_passed_through():
    text = """
keys: {claude: {provider: anthropic, api_key: sk-ant-test-0001, stream_usage: false}}
models: {claude: {routes: [{key: claude, model: claude-sonnet-4-6}]}}
"""
    with pytest.raises(ConfigError, match="stream_usage applies to providers openai and azure"):
        parse_config(text, source="routes.yaml", environ={})


async def test_a_key_over_its_daily_budget_is_out_until_midnight_utc(stack, clock):
    wall = WallClock("2026-11-24T23:59:00+00:00")
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(
        config(sim_url, key_a={"budget": {"usd_per_day": 30}}), clock=clock, wall=wall
    )
    routes = []
    for _ in range(4):
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        routes.append(raw.headers["x-router-route"])
    # Each request costs more than $10 here (usage x $1 or $2 a token): after the
    # spend reaches $30, key a is out and b serves.
    first_b = routes.index("b/gpt-4o")
    assert routes[:first_b] == ["a/gpt-4o"] * first_b and set(routes[first_b:]) == {"b/gpt-4o"}
    _, keys = await admin_state(url)
    assert keys["a"]["disabled_reason"] == "budget"
    served_by_a = sim.stats["a"].served
    clock.advance(61)  # the UTC day turns
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    assert raw.headers["x-router-route"] == "a/gpt-4o"
    assert sim.stats["a"].served == served_by_a + 1


async def test_a_model_over_its_budget_hands_requests_to_its_fallback(stack, clock):
    wall = WallClock("2026-11-24T10:00:00+00:00")
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = config(sim_url, budget={"usd_per_month": 5})
    url = await stack.router(text, clock=clock, wall=wall)
    first = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    assert first.headers["x-router-route"] == "a/gpt-4o"
    later = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    assert later.headers["x-router-route"] == "c/gpt-4o-mini"
    assert later.headers["x-router-attempts"] == "1"  # gpt-4o's routes were not tried


async def test_a_model_over_its_budget_with_nowhere_to_go_says_so(stack, clock):
    """No fallback: the 503 names the budget, the one reason nothing was tried."""
    wall = WallClock("2026-11-24T10:00:00+00:00")
    _, sim_url = await stack.sim(SIM_A)
    text = routes_yaml(
        keys=[sim_key(SIM_A, sim_url)],
        models={"gpt-4o": model(route("a", "gpt-4o", price=PRICE), budget={"usd_per_month": 5})},
    )
    url = await stack.router(text, clock=clock, wall=wall)
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)  # over it now
    with pytest.raises(openai.APIStatusError) as caught:
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.status_code == 503
    assert "over its budget until the period turns: gpt-4o" in caught.value.message


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


async def test_a_model_over_its_budget_shows_in_metrics_admin_and_readyz(stack, clock):
    """Out: llm_router_model_disabled{reason="budget"} 1, listed by /admin and /readyz
    (still ready: its fallback serves); back when the period turns: 0, listed nowhere."""
    wall = WallClock("2026-11-30T22:00:00+00:00")
    registry = CollectorRegistry()
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = config(sim_url, budget={"usd_per_month": 5})
    url = await stack.router(text, clock=clock, wall=wall, registry=registry)
    labels = {"model": "gpt-4o", "reason": "budget"}

    async def scraped() -> float | None:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as page:
            assert page.status == 200
        return registry.get_sample_value("llm_router_model_disabled", labels)

    assert await scraped() is None  # no series before a model is ever out
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)  # over it now
    assert await scraped() == 1
    admin = await get_json(f"{url}/admin/routes")
    [out] = admin["models_disabled"]
    assert out["model"] == "gpt-4o" and out["reason"] == "budget"
    assert out["available_in_seconds"] == pytest.approx(2 * 3600, abs=5)  # the month turns
    async with aiohttp.ClientSession() as session, session.get(f"{url}/admin") as response:
        page = await response.text()
    assert "Models out of rotation" in page and "gpt-4o" in page
    ready = await get_json(f"{url}/readyz")
    assert ready["status"] == "ready" and ready["models_disabled"] == 1  # names: /admin

    clock.advance(2 * 3600 + 61)  # December: the block has run out
    wall.now += 2 * 3600 + 61
    assert await scraped() == 0
    assert (await get_json(f"{url}/admin/routes"))["models_disabled"] == []
    assert "models_disabled" not in await get_json(f"{url}/readyz")
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    assert raw.headers["x-router-route"] == "a/gpt-4o"


def test_periods_turn_at_utc_midnight_and_the_first_of_the_month():
    moment = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    ends = period_ends(moment)
    assert ends["day"] == ("2026-12-31", 3600.0)
    assert ends["month"] == ("2026-12", 3600.0)


def test_fallback_cheaper_resolves_to_the_cheaper_models_cheapest_last():
    text = """
keys:
  k: {provider: openai, api_key: sk-test-aaaaaaaaaaaa0000}
models:
  big:
    routes: [{key: k, model: gpt-4o}]
    fallback: cheaper
  medium:
    routes: [{key: k, model: m1, price: {input_per_mtok: 1, output_per_mtok: 4}}]
  small:
    routes: [{key: k, model: gpt-4o-mini}]
  pricier:
    routes: [{key: k, model: m2, price: {input_per_mtok: 30, output_per_mtok: 60}}]
  unpriced:
    routes: [{key: k, model: some-local-model}]
"""
    loaded = parse_config(text, source="routes.yaml", environ={})
    assert loaded.models["big"].fallback == ("medium", "small")
    assert loaded.models["big"].chain == ("big", "medium", "small")
    table = format_route_table(loaded)
    assert "fallback chain: big -> medium -> small" in table
    assert "2.5/10" in table and "128,000" in table  # gpt-4o's price and window


def test_fallback_cheaper_needs_a_price_to_compare():
    text = """
keys:
  k: {provider: openai, api_key: sk-test-aaaaaaaaaaaa0000}
models:
  local:
    routes: [{key: k, model: some-local-model}]
    fallback: cheaper
"""
    with pytest.raises(ConfigError, match="'cheaper' needs a price for local"):
        parse_config(text, source="routes.yaml", environ={})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"x":1,"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}',
            (9, 12),
            id="openai",
        ),
        pytest.param(
            b'{"usage":{"input_tokens":5,"cache_creation_input_tokens":0,"output_tokens":7}}',
            (5, 7),
            id="anthropic",
        ),
        pytest.param(
            b'{"usage":{"completion_tokens":3,"prompt_tokens":4}}', (4, 3), id="other-order"
        ),
        pytest.param(
            b'{"data":[],"usage":{"prompt_tokens":6,"total_tokens":6}}', (6, 0), id="embeddings"
        ),
        pytest.param(b'{"content":"a \\"usage\\" word"}', None, id="escaped-in-text"),
        pytest.param(b'{"no":"usage"}', None, id="none"),
    ],
)
def test_usage_is_read_from_the_tail_of_an_answer(body, expected):
    usage = usage_from_body(body)
    assert (None if usage is None else (usage.input_tokens, usage.output_tokens)) == expected


async def _served_by(url: str) -> str:
    """Which route served a gpt-4o request."""
    raw = await client(url).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    return raw.headers["x-router-route"]


@asynccontextmanager
async def _spent_a(
    sim: Any, path: Path, clock: Any
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[str]]]]:
    """A router started from `path` (key a with a budget of $30 a day), served by a
    until its budget is spent. Yields its URL and a call that says which route served
    a request."""
    wall = WallClock("2026-11-24T10:00:00+00:00")
    runner = await start(
        load_config(path), "127.0.0.1", 0, config_path=path, clock=clock, wall=wall
    )
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"

        served_by = functools.partial(_served_by, url)

        while await served_by() == "a/gpt-4o":  # each costs over $10: out by the 4th
            assert sim.stats["a"].served < 4
        yield url, served_by
    finally:
        await runner.cleanup()


async def test_a_reload_that_raises_or_drops_a_budget_puts_the_key_back_at_once(
    stack, clock, tmp_path
):
    """An operator raising a budget wants traffic now, not at the turn of the day; a
    budget changed but still under the spend keeps the key out, and one lowered below
    the spend takes it out at once."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    path.write_text(config(sim_url, key_a={"budget": {"usd_per_day": 30}}))
    async with _spent_a(sim, path, clock) as (url, served_by):
        for budget, back in ((20, False), (1_000_000, True), (20, False), (None, True)):
            extra = {"budget": {"usd_per_day": budget}} if budget else {}
            path.write_text(config(sim_url, key_a=extra))
            assert (await reload(url))[0] == 200
            # 20: changed, still under the spend, out. Raised: back. 20 again while
            # serving: lowered below the spend, out at once (not after one more request).
            # Dropped: back.
            assert (await served_by() == "a/gpt-4o") is back, budget


async def test_a_new_account_under_a_spent_keys_name_stays_out_for_the_budget(
    stack, clock, tmp_path
):
    """Spend is kept by the key's name, a block by its account: another account under
    the name of a key whose budget is spent is out at once, not after one more request
    (its quota and cooldowns, on the other hand, start clean)."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    budget = {"budget": {"usd_per_day": 30}}
    path.write_text(config(sim_url, key_a=budget))
    async with _spent_a(sim, path, clock) as (url, served_by):
        served = sim.stats["a"].served
        other = {**budget, "headers": {"OpenAI-Organization": "org-2"}}
        path.write_text(config(sim_url, key_a=other))
        assert (await reload(url))[0] == 200
        assert await served_by() == "b/gpt-4o"
        assert sim.stats["a"].served == served
        _, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] == "budget"


async def test_a_model_reloaded_without_its_budget_or_removed_leaves_the_metrics(
    stack, clock, tmp_path
):
    """Out, then its budget dropped by a reload: its series says 0; the model removed by
    a second reload: its series is gone, so no alert reads a stale model as out."""
    wall = WallClock("2026-11-24T10:00:00+00:00")
    registry = CollectorRegistry()
    _, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    path.write_text(config(sim_url, budget={"usd_per_month": 5}))
    runner = await start(
        load_config(path), "127.0.0.1", 0, config_path=path, clock=clock, wall=wall,
        registry=registry,
    )  # fmt: skip
    labels = {"model": "gpt-4o", "reason": "budget"}
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"

        async def scraped() -> float | None:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics"):
                pass
            return registry.get_sample_value("llm_router_model_disabled", labels)

        await client(url).chat.completions.create(model="gpt-4o", messages=HI)  # over it
        assert await scraped() == 1
        path.write_text(config(sim_url))
        assert (await reload(url))[0] == 200
        assert await scraped() == 0
        path.write_text(
            routes_yaml(
                keys=sim_keys(sim_url, SIM_A, SIM_B, SIM_C),
                models={"gpt-4o-mini": model(route("c", "gpt-4o-mini"))},
            )
        )
        assert (await reload(url))[0] == 200
        assert await scraped() is None
    finally:
        await runner.cleanup()


async def test_a_stream_begun_before_a_budget_was_raised_does_not_take_the_key_out_again(
    stack, clock, tmp_path
):
    """A stream on key a begins; a then spends its $30 budget and is out; the operator
    raises the budget and a is back. When the stream ends, its cost is charged against
    the budget serving now: a stays in (it was charged against the $30 it began under,
    which took a out again for the rest of the day)."""
    slow_a = dataclasses.replace(SIM_A, chunk_delay=0.25)  # its stream takes over 2 s
    sim, sim_url = await stack.sim(slow_a, SIM_B, SIM_C)
    path = tmp_path / "routes.yaml"
    path.write_text(config(sim_url, key_a={"budget": {"usd_per_day": 30}}))
    wall = WallClock("2026-11-24T10:00:00+00:00")
    registry = CollectorRegistry()
    runner = await start(
        load_config(path), "127.0.0.1", 0, config_path=path, clock=clock, wall=wall,
        registry=registry,
    )  # fmt: skip
    labels = {"model": "gpt-4o", "route": "a/gpt-4o", "key": "a", "provider": "openai"}
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"

        served_by = functools.partial(_served_by, url)

        payload = {"model": "gpt-4o", "messages": HI, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/chat/completions", json=payload) as stream,
        ):
            assert stream.headers["x-router-route"] == "a/gpt-4o"
            while await served_by() == "a/gpt-4o":  # each costs over $10: out by the 4th
                assert sim.stats["a"].served < 5
            path.write_text(config(sim_url, key_a={"budget": {"usd_per_day": 1_000_000}}))
            assert (await reload(url))[0] == 200
            assert await served_by() == "a/gpt-4o"
            assert not stream.content.at_eof()  # the stream is still going
            spent = registry.get_sample_value("llm_router_spend_usd_total", labels)
            body = await stream.read()
        assert body.endswith(b"data: [DONE]\n\n")
        async with asyncio.timeout(5):  # until the stream is charged, just after its end
            while registry.get_sample_value("llm_router_spend_usd_total", labels) == spent:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and its budget checked, right after
        assert await served_by() == "a/gpt-4o"
        _, keys = await admin_state(url)
        assert keys["a"]["disabled_reason"] is None
    finally:
        await runner.cleanup()
