"""Costs with the provider's prompt cache: cached input at the cache-read price, Anthropic's
cache writes at the cache-write price, through the simulator's per-key cache, the
official SDKs and a real socket; logged per request and counted in the metrics."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from prometheus_client import CollectorRegistry

from router.sim import SimKey
from router.telemetry.logs import configure_logging, reset_logging
from router.wire.dialects import ANTHROPIC_MESSAGES, OPENAI_RESPONSES
from router.wire.stream_watch import StreamWatch
from router.wire.usage import Usage, usage_from_body
from tests.configs import model, route, routes_yaml, sim_key
from tests.conftest import SIM_A, client

ANT = SimKey(name="ant", api_key="sk-ant-sim-key-000001")
# Per token: $1 fresh input, $2 output, $0.10 a cache read, $1.25 a cache write.
PRICE = {
    "input_per_mtok": 1_000_000,
    "output_per_mtok": 2_000_000,
    "cached_input_per_mtok": 100_000,
    "cache_write_per_mtok": 1_250_000,
}
TURNS = 4


class RequestLog:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def requests(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines() if line]
        return [line for line in lines if line.get("event") == "request"]


@pytest.fixture
def log() -> Iterator[RequestLog]:
    captured = RequestLog()
    configure_logging(secrets=[SIM_A.api_key, ANT.api_key], stream=captured.stream,
                      cache_loggers=False)  # fmt: skip
    try:
        yield captured
    finally:
        reset_logging()


async def settled(log: RequestLog, count: int) -> dict[str, Any]:
    """The count-th request event (a stream logs once its end is in)."""
    async with asyncio.timeout(5):
        while len(log.requests()) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return log.requests()[count - 1]


def spend(registry: CollectorRegistry, route_id: str, provider: str) -> float:
    key, _, _ = route_id.partition("/")
    labels = {"model": "m", "route": route_id, "key": key, "provider": provider}
    return registry.get_sample_value("llm_router_spend_usd_total", labels) or 0.0


def cache_tokens(registry: CollectorRegistry, route_id: str, provider: str, kind: str) -> float:
    key, _, _ = route_id.partition("/")
    labels = {"model": "m", "route": route_id, "key": key, "provider": provider, "kind": kind}
    return registry.get_sample_value("llm_router_cached_tokens_total", labels) or 0.0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_cached_input_is_charged_at_the_cached_price(stack, log, stream):
    registry = CollectorRegistry()
    _, sim_url = await stack.sim(SIM_A)
    text = routes_yaml(
        keys=[sim_key(SIM_A, sim_url)], models={"m": model(route("a", "gpt-4o", price=PRICE))}
    )
    sdk = client(await stack.router(text, registry=registry))
    messages: list[Any] = [{"role": "system", "content": "You answer briefly. " * 40}]
    cached_turns = 0
    for turn in range(TURNS):
        messages.append({"role": "user", "content": f"Question {turn}? " * 5})
        before = spend(registry, "a/gpt-4o", "openai")
        if stream:
            chunks = [
                chunk
                async for chunk in await sdk.chat.completions.create(
                    model="m",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            ]
            usage = chunks[-1].usage
            reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            completion = await sdk.chat.completions.create(model="m", messages=messages)
            usage, reply = completion.usage, completion.choices[0].message.content
        assert usage is not None and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        cached_turns += cached > 0
        expected = (usage.prompt_tokens - cached) * 1 + cached * 0.1 + usage.completion_tokens * 2
        event = await settled(log, turn + 1)
        assert event["cost_usd"] == pytest.approx(expected)
        assert (event["tokens_in"], event["tokens_cached"]) == (usage.prompt_tokens, cached)
        assert spend(registry, "a/gpt-4o", "openai") - before == pytest.approx(expected)
        if cached:  # cheaper than at the full input price, by 90% of the cached share
            full = usage.prompt_tokens * 1 + usage.completion_tokens * 2
            assert full - expected == pytest.approx(cached * 0.9)
        messages.append({"role": "assistant", "content": reply})
    assert cached_turns == TURNS - 1  # every turn after the first reads the cache
    assert cache_tokens(registry, "a/gpt-4o", "openai", "read") > 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_anthropic_cache_reads_and_writes_are_charged_at_their_prices(stack, log, stream):
    registry = CollectorRegistry()
    sim, _ = await stack.sim(ANT)
    text = routes_yaml(
        keys=[sim_key(ANT, sim.root, provider="anthropic")],
        models={"m": model(route("ant", "claude-sonnet-4-6", price=PRICE))},
    )
    url = await stack.router(text, registry=registry)
    sdk = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0, timeout=20)
    system: Any = [{"type": "text", "text": "You answer briefly. " * 40,
                    "cache_control": {"type": "ephemeral"}}]  # fmt: skip
    messages: list[Any] = []
    read_turns = 0
    written_total = 0
    for turn in range(TURNS):
        messages.append({"role": "user", "content": f"Question {turn}? " * 5})
        before = spend(registry, "ant/claude-sonnet-4-6", "anthropic")
        if stream:
            async with sdk.messages.stream(
                model="m", max_tokens=64, system=system, messages=messages
            ) as events:
                message = await events.get_final_message()
        else:
            message = await sdk.messages.create(
                model="m", max_tokens=64, system=system, messages=messages
            )
        usage = message.usage
        read = usage.cache_read_input_tokens or 0
        written = usage.cache_creation_input_tokens or 0
        read_turns += read > 0
        written_total += written
        expected = usage.input_tokens * 1 + read * 0.1 + written * 1.25 + usage.output_tokens * 2
        event = await settled(log, turn + 1)
        assert event["cost_usd"] == pytest.approx(expected)
        # tokens_in is every input token: Anthropic's input_tokens leaves the cached out.
        assert event["tokens_in"] == usage.input_tokens + read + written
        assert (event["tokens_cached"], event["tokens_cache_written"]) == (read, written)
        assert spend(registry, "ant/claude-sonnet-4-6", "anthropic") - before == pytest.approx(
            expected
        )
        messages.append({"role": "assistant", "content": message.content[0].text})  # type: ignore[union-attr]
    assert read_turns == TURNS - 1 and written_total > 0
    route_id = "ant/claude-sonnet-4-6"
    assert cache_tokens(registry, route_id, "anthropic", "write") == written_total
    await sdk.close()


async def test_without_cache_prices_litellms_table_gives_them(stack, log):
    _, sim_url = await stack.sim(SIM_A)
    text = routes_yaml(keys=[sim_key(SIM_A, sim_url)], models={"m": model(route("a", "gpt-4o"))})
    sdk = client(await stack.router(text))
    messages: list[Any] = [{"role": "system", "content": "You answer briefly. " * 40}]
    for turn in range(2):
        messages.append({"role": "user", "content": f"Question {turn}?"})
        raw = await sdk.chat.completions.with_raw_response.create(model="m", messages=messages)
        completion = raw.parse()
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    cached = usage.prompt_tokens_details.cached_tokens or 0
    assert cached > 0
    # gpt-4o in litellm's table: $2.50 in, $1.25 cached, $10 out per million tokens.
    expected = (usage.prompt_tokens - cached) * 2.5e-6 + cached * 1.25e-6
    expected += usage.completion_tokens * 1e-5
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected, abs=1e-8)


async def test_a_price_without_cache_prices_charges_cached_input_as_fresh(stack, log):
    _, sim_url = await stack.sim(SIM_A)
    price = {"input_per_mtok": 1_000_000, "output_per_mtok": 2_000_000}
    text = routes_yaml(
        keys=[sim_key(SIM_A, sim_url)], models={"m": model(route("a", "gpt-4o", price=price))}
    )
    sdk = client(await stack.router(text))
    messages: list[Any] = [{"role": "system", "content": "You answer briefly. " * 40}]
    for turn in range(2):
        messages.append({"role": "user", "content": f"Question {turn}?"})
        raw = await sdk.chat.completions.with_raw_response.create(model="m", messages=messages)
        completion = raw.parse()
        messages.append({"role": "assistant", "content": completion.choices[0].message.content})
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens
    expected = usage.prompt_tokens * 1 + usage.completion_tokens * 2
    assert float(raw.headers["x-router-cost-usd"]) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"usage":{"prompt_tokens":90,"completion_tokens":5,"total_tokens":95,'
            b'"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0}}}',
            Usage(90, 5, 64),
            id="openai",
        ),
        # OpenAI's whole object, read in one match, and its near misses, read by search.
        pytest.param(
            b'{"usage":{"prompt_tokens":90,"completion_tokens":5,"total_tokens":95,'
            b'"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},'
            b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}',
            Usage(90, 5, 64),
            id="openai-whole",
        ),
        pytest.param(
            b'{"usage":{"prompt_tokens":90,"completion_tokens":5,"total_tokens":95,'
            b'"prompt_tokens_details":{"cached_tokens":64,"cache_write_tokens":20}}}',
            Usage(90, 5, 64, 20),
            id="openai-whole-with-writes",
        ),
        pytest.param(
            b'{"usage":{"prompt_tokens":90,"completion_tokens":5,"total_tokens":95,'
            b'"prompt_tokens_details":{"cached_tokens":64},"cache_creation_input_tokens":20}}',
            Usage(90, 5, 64, 20),
            id="openai-then-anthropic-names",
        ),
        pytest.param(
            b'{"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,'
            b'"prompt_tokens_details":{"cached_tokens":64}}}',
            Usage(9, 5),
            id="openai-whole-more-cached-than-input",
        ),
        pytest.param(
            b'{"usage":{"input_tokens":3,"cache_creation_input_tokens":20,'
            b'"cache_read_input_tokens":70,"output_tokens":5}}',
            Usage(93, 5, 70, 20),
            id="anthropic",
        ),
        pytest.param(
            b'{"usage":{"input_tokens":90,"input_tokens_details":{"cached_tokens":64},'
            b'"output_tokens":5,"total_tokens":95}}',
            Usage(90, 5, 64),
            id="responses",
        ),
        pytest.param(
            b'{"usage":{"prompt_tokens":93,"completion_tokens":5,"cache_read_input_tokens":70,'
            b'"cache_creation_input_tokens":20}}',
            Usage(93, 5, 70, 20),
            id="litellm-style",
        ),
        pytest.param(
            b'{"usage":{"prompt_tokens":93,"completion_tokens":5,"prompt_tokens_details":'
            b'{"cached_tokens":70,"cache_write_tokens":20},"cache_read_input_tokens":70,'
            b'"cache_creation_input_tokens":20}}',
            Usage(93, 5, 70, 20),
            id="litellm-both-names",
        ),
        pytest.param(
            b'{"usage":{"input_tokens":90,"input_tokens_details":{"cached_tokens":0,'
            b'"cache_write_tokens":30},"output_tokens":5}}',
            Usage(90, 5, 0, 30),
            id="responses-write",
        ),
        pytest.param(
            b'{"usage":{"completion_tokens":5,"prompt_tokens":90,'
            b'"prompt_tokens_details":{"cached_tokens":64}}}',
            Usage(90, 5, 64),
            id="other-order",
        ),
        pytest.param(
            b'{"usage":{"prompt_tokens":9,"completion_tokens":5,'
            b'"prompt_tokens_details":{"cached_tokens":64}}}',
            Usage(9, 5),
            id="more-cached-than-input",
        ),
    ],
)
def test_cache_counts_are_read_with_the_usage(body, expected):
    assert usage_from_body(body) == expected


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def test_stream_cache_counts_are_read_in_each_dialect():
    anthropic_stream = _event("message_start", {"type": "message_start", "message": {"usage": {
        "input_tokens": 3, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 70,
        "output_tokens": 1}}}) + _event(
        "message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}}
    ) + _event("message_stop", {"type": "message_stop"})  # fmt: skip
    watch = StreamWatch(ANTHROPIC_MESSAGES, 1 << 20)
    watch.see(anthropic_stream)
    assert watch.end().usage == Usage(93, 5, 70, 20)
    usage = {"input_tokens": 90, "input_tokens_details": {"cached_tokens": 64},
             "output_tokens": 5}  # fmt: skip
    completed = {"type": "response.completed", "response": {"usage": usage}}
    watch = StreamWatch(OPENAI_RESPONSES, 1 << 20)
    watch.see(_event("response.completed", completed))
    assert watch.end().usage == Usage(90, 5, 64)
