"""Anthropic, Azure, embeddings and the Responses API through the router, with the
official SDKs as clients and the simulator speaking each provider's wire format."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from structlog.testing import capture_logs

from router.sim import Fault, SimKey
from tests.configs import (
    model,
    preferring_a,
    route,
    routes_yaml,
    sim_key,
    sim_keys,
    two_keys_config,
)
from tests.conftest import HI, SIM_A, SIM_B, admin_state, client

ANT_A = SimKey(name="ant-a", api_key="sk-ant-sim-key-a-0000001")
ANT_B = SimKey(name="ant-b", api_key="sk-ant-sim-key-b-0000002")
AZ = SimKey(name="az", api_key="azure-sim-key-0000000003")
GEM = SimKey(name="gem", api_key="gemini-sim-key-000000004")
GEM2 = SimKey(name="gem2", api_key="gemini-sim-key-000000005")


def claude_config(root: str, **sections: Any) -> str:
    return routes_yaml(
        keys=sim_keys(root, ANT_A, ANT_B, provider="anthropic"),
        models={
            "claude": model(
                route("ant-a", "claude-sonnet-4-6"), route("ant-b", "claude-sonnet-4-6", priority=2)
            )
        },
        **sections,
    )


def claude_client(url: str, **kwargs) -> anthropic.AsyncAnthropic:
    kwargs.setdefault("api_key", "client-token")
    return anthropic.AsyncAnthropic(base_url=url, max_retries=0, timeout=20, **kwargs)


async def ask_claude(url: str, **kwargs):
    raw = await claude_client(url).messages.with_raw_response.create(
        model="claude", max_tokens=64, messages=HI, **kwargs
    )
    return raw.headers, await raw.parse()


class TestAnthropicMessages:
    async def test_messages_pass_through_to_an_anthropic_route(self, stack):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root))
        headers, message = await ask_claude(url)
        assert message.content[0].text == "Hello from ant-a via claude-sonnet-4-6."
        assert message.usage.input_tokens > 0
        assert headers["x-router-route"] == "ant-a/claude-sonnet-4-6"
        sent = sim.requests[-1]
        assert sent.path == "/v1/messages"
        assert sent.headers["x-api-key"] == ANT_A.api_key
        assert sent.headers["anthropic-version"]  # the SDK's, passed on
        assert "client-token" not in json.dumps(sent.headers)
        assert json.loads(sent.body)["model"] == "claude-sonnet-4-6"

    async def test_a_stream_passes_through_event_by_event(self, stack):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root))
        async with claude_client(url).messages.stream(
            model="claude", max_tokens=64, messages=HI
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "Hello from ant-a via claude-sonnet-4-6."
        assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault.rate_limit(retry_after=30), id="rate_limit_error"),
            pytest.param(Fault.overloaded(), id="529-overloaded"),
            pytest.param(Fault.insufficient_quota(), id="credit-balance-400"),
            pytest.param(Fault.auth(), id="401"),
        ],
    )
    async def test_anthropic_signals_fail_over_to_the_next_key(self, stack, clock, fault):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root), clock=clock)
        sim.inject("ant-a", fault)
        headers, message = await ask_claude(url)
        assert headers["x-router-route"] == "ant-b/claude-sonnet-4-6"
        assert message.content[0].text.startswith("Hello from ant-b")

    async def test_rate_limited_key_cools_for_its_retry_after(self, stack, clock):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root), clock=clock)
        sim.inject("ant-a", Fault.rate_limit(retry_after=30))
        for _ in range(3):
            await ask_claude(url)
        assert sim.stats["ant-a"].requests == 1
        clock.advance(30.5)
        assert (await ask_claude(url))[0]["x-router-route"] == "ant-a/claude-sonnet-4-6"

    async def test_credit_balance_takes_the_key_out(self, stack, clock):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root), clock=clock)
        sim.inject("ant-a", Fault.insufficient_quota())
        for _ in range(3):
            await ask_claude(url)
        clock.advance(600)
        await ask_claude(url)
        assert sim.stats["ant-a"].requests == 1

    async def test_headroom_headers_stop_sending_before_a_429(self, stack, clock):
        limited = SimKey(name="ant-a", api_key=ANT_A.api_key, rpm=2)
        sim, _ = await stack.sim(limited, ANT_B, clock=clock)
        url = await stack.router(claude_config(sim.root), clock=clock)
        routes = [(await ask_claude(url))[0]["x-router-route"] for _ in range(4)]
        assert routes == ["ant-a/claude-sonnet-4-6"] * 2 + ["ant-b/claude-sonnet-4-6"] * 2
        assert sim.stats["ant-a"].rejected == 0

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Fault.stream_error(after_chunks=0), id="error-after-preamble"),
            pytest.param(Fault.stream_cut(after_chunks=0), id="cut-after-preamble"),
            pytest.param(Fault.rate_limit(retry_after=9), id="429-before-stream"),
        ],
    )
    async def test_a_stream_fails_over_before_its_first_content(self, stack, fault):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root))
        sim.inject("ant-a", fault)
        async with claude_client(url).messages.stream(
            model="claude", max_tokens=64, messages=HI
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        assert text == "Hello from ant-b via claude-sonnet-4-6."

    async def test_a_stream_failing_after_its_first_content_ends_with_an_error(self, stack):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root))
        sim.inject("ant-a", Fault.stream_cut(after_chunks=2))
        with pytest.raises(anthropic.APIError):
            async with claude_client(url).messages.stream(
                model="claude", max_tokens=64, messages=HI
            ) as stream:
                async for _ in stream.text_stream:
                    pass
        assert sim.stats["ant-b"].requests == 0

    async def test_exhaustion_answers_in_anthropics_own_error_shape(self, stack, clock):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        no_wait = {"max_wait": 0}  # the 429 at once: a FakeClock does not move while waiting
        url = await stack.router(claude_config(sim.root, failover=no_wait), clock=clock)
        sim.inject("ant-a", Fault.rate_limit(retry_after=20))
        sim.inject("ant-b", Fault.rate_limit(retry_after=8))
        with pytest.raises(anthropic.RateLimitError) as limited:
            await ask_claude(url)
        assert limited.value.body["type"] == "error"
        assert limited.value.body["error"]["type"] == "rate_limit_error"
        assert limited.value.response.headers["retry-after"] == "8"

    async def test_routes_down_answer_529_overloaded(self, stack, clock):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root), clock=clock)
        sim.inject("ant-a", Fault.server_error(500))
        sim.inject("ant-b", Fault.server_error(500))
        with pytest.raises(anthropic.APIStatusError) as down:
            await ask_claude(url)
        assert down.value.status_code == 529
        assert down.value.body["error"]["type"] == "overloaded_error"

    async def test_bad_input_is_refused_in_anthropics_shape(self, stack):
        sim, _ = await stack.sim(ANT_A)
        url = await stack.router(claude_config(sim.root))
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await claude_client(url).messages.create(model="nope", max_tokens=5, messages=HI)
        assert unknown.value.body["error"]["type"] == "not_found_error"
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/messages", data=b"{") as response,
        ):
            body = await response.json()
        assert response.status == 400 and body["error"]["type"] == "invalid_request_error"

    async def test_a_client_key_may_come_as_x_api_key(self, stack):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        config = claude_config(sim.root, server={"client_keys": ["${ROUTER_KEY}"]})
        url = await stack.router(config, environ={"ROUTER_KEY": "router-key-123"})
        with pytest.raises(anthropic.AuthenticationError):
            await claude_client(url).messages.create(model="claude", max_tokens=5, messages=HI)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/v1/messages",
                json={"model": "claude", "max_tokens": 5, "messages": HI},
                headers={"x-api-key": "router-key-123", "anthropic-version": "2023-06-01"},
            ) as response,
        ):
            assert response.status == 200

    async def test_messages_reach_an_openai_route_by_translation(self, stack):
        _, sim_url = await stack.sim(SIM_A, SIM_B)
        url = await stack.router(two_keys_config(sim_url, affinity=False))
        raw = await claude_client(url).messages.with_raw_response.create(
            model="gpt-4o", max_tokens=64, messages=HI
        )
        message = await raw.parse()
        assert message.content[0].text == "Hello from a via gpt-4o."
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        async with claude_client(url).messages.stream(
            model="gpt-4o", max_tokens=64, messages=HI
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        assert text == "Hello from a via gpt-4o."

    async def test_an_api_no_route_can_serve_is_refused_clearly(self, stack):
        sim, _ = await stack.sim(ANT_A, ANT_B)
        url = await stack.router(claude_config(sim.root))
        with capture_logs() as logs, pytest.raises(openai.BadRequestError) as refused:
            await client(url).embeddings.create(model="claude", input="x")
        assert refused.value.code == "unsupported_api_for_model"
        # Refused, but for a model the config has: its log line and series name it.
        [line] = [event for event in logs if event["event"] == "request"]
        assert (line["model"], line["status"], line["outcome"]) == ("claude", 400, "rejected")


class TestTranslatedChat:
    """OpenAI clients served by Anthropic and Gemini routes through litellm."""

    @staticmethod
    def config(sim_url: str, root: str) -> str:
        return routes_yaml(
            keys=[
                sim_key(SIM_A, sim_url),
                sim_key(ANT_A, root, provider="anthropic"),
                sim_key(GEM, root, provider="gemini"),
                sim_key(GEM2, root, provider="gemini"),
            ],
            models={
                "gpt-4o": model(
                    route("a", "gpt-4o"), route("ant-a", "claude-sonnet-4-6", priority=2)
                ),
                "flash": model(
                    route("gem", "gemini-2.5-flash"), route("gem2", "gemini-2.5-flash", priority=2)
                ),
            },
        )

    async def test_limited_openai_routes_hand_the_request_to_claude(self, stack, clock):
        sim, sim_url = await stack.sim(SIM_A, ANT_A, GEM, GEM2)
        url = await stack.router(self.config(sim_url, sim.root), clock=clock)
        sim.inject("a", Fault.rate_limit(retry_after=30), times=2)
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        completion = raw.parse()
        assert raw.headers["x-router-route"] == "ant-a/claude-sonnet-4-6"
        assert completion.choices[0].message.content == "Hello from ant-a via claude-sonnet-4-6."
        assert completion.usage.prompt_tokens > 0
        assert sim.requests[-1].path == "/v1/messages"
        stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello from ant-a via claude-sonnet-4-6."
        assert all(c.usage is None for c in chunks)  # usage kept back: not asked for

    async def test_gemini_routes_serve_and_fail_over_on_resource_exhausted(self, stack, clock):
        sim, sim_url = await stack.sim(SIM_A, ANT_A, GEM, GEM2)
        url = await stack.router(self.config(sim_url, sim.root), clock=clock)
        raw = await client(url).chat.completions.with_raw_response.create(
            model="flash", messages=HI
        )
        assert raw.headers["x-router-route"] == "gem/gemini-2.5-flash"
        assert raw.parse().choices[0].message.content == "Hello from gem via gemini-2.5-flash."
        sim.inject("gem", Fault.rate_limit(retry_after=20))  # RESOURCE_EXHAUSTED + RetryInfo
        raw = await client(url).chat.completions.with_raw_response.create(
            model="flash", messages=HI
        )
        assert raw.headers["x-router-route"] == "gem2/gemini-2.5-flash"
        routes, _keys = await admin_state(url)
        assert routes["gem/gemini-2.5-flash"]["state"] == "cooling_down"
        assert routes["gem/gemini-2.5-flash"]["available_in_seconds"] == 20

    async def test_a_gemini_daily_quota_takes_the_key_out(self, stack, clock):
        sim, sim_url = await stack.sim(SIM_A, ANT_A, GEM, GEM2)
        url = await stack.router(self.config(sim_url, sim.root), clock=clock)
        sim.inject("gem", Fault.insufficient_quota())  # QuotaFailure ...PerDay...
        await client(url).chat.completions.create(model="flash", messages=HI)
        _routes, keys = await admin_state(url)
        assert keys["gem"]["disabled_reason"] == "quota"


def azure_config(root: str, sim_url: str, *, api_version: str = "2024-10-21") -> str:
    return routes_yaml(
        keys=[
            sim_key(AZ, root, provider="azure", api_version=api_version),
            *sim_keys(sim_url, SIM_B),
        ],
        models={
            "gpt-4o": model(route("az", "gpt4o-deployment"), route("b", "gpt-4o", priority=2)),
            "embed": model(
                route("az", "embed-deployment"), route("b", "text-embedding-3-small", priority=2)
            ),
        },
    )


class TestAzure:
    async def test_chat_goes_to_the_deployment_url_with_api_key(self, stack):
        sim, sim_url = await stack.sim(AZ, SIM_B)
        url = await stack.router(azure_config(sim.root, sim_url))
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        assert raw.headers["x-router-route"] == "az/gpt4o-deployment"
        assert raw.parse().choices[0].message.content == "Hello from az via gpt4o-deployment."
        sent = sim.requests[-1]
        assert sent.path == "/openai/deployments/gpt4o-deployment/chat/completions"
        assert "api-version=2024-10-21" in sent.query
        assert sent.headers["api-key"] == AZ.api_key and "authorization" not in sent.headers

    async def test_azure_429_cools_for_retry_after_ms_and_fails_over(self, stack, clock):
        sim, sim_url = await stack.sim(AZ, SIM_B)
        url = await stack.router(azure_config(sim.root, sim_url), clock=clock)
        sim.inject("az", Fault.rate_limit(retry_after=6))
        raw = await client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI
        )
        assert raw.headers["x-router-route"] == "b/gpt-4o"
        routes, _keys = await admin_state(url)
        assert routes["az/gpt4o-deployment"]["state"] == "cooling_down"
        assert routes["az/gpt4o-deployment"]["available_in_seconds"] == 6

    async def test_an_empty_azure_deployment_quota_takes_the_key_out(self, stack, clock):
        sim, sim_url = await stack.sim(AZ, SIM_B)
        url = await stack.router(azure_config(sim.root, sim_url), clock=clock)
        sim.inject("az", Fault.insufficient_quota())  # 429 "retry after 86400 seconds"
        await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        _routes, keys = await admin_state(url)
        assert keys["az"]["state"] == "disabled" and keys["az"]["disabled_reason"] == "quota"

    async def test_azure_streams_pass_through(self, stack):
        sim, sim_url = await stack.sim(AZ, SIM_B)
        url = await stack.router(azure_config(sim.root, sim_url))
        stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello from az via gpt4o-deployment."

    async def test_an_older_api_version_refusing_stream_options_still_streams(self, stack):
        older = dataclasses.replace(AZ, refuses_stream_options=True)
        sim, sim_url = await stack.sim(older, SIM_B)
        url = await stack.router(azure_config(sim.root, sim_url, api_version="2024-06-01"))
        for _ in range(2):
            stream = await client(url).chat.completions.create(
                model="gpt-4o", messages=HI, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Hello from az via gpt4o-deployment."
        sent = [request for request in sim.requests if request.key_name == "az"]
        assert ["api-version=2024-06-01" in request.query for request in sent] == [True] * 3
        assert [b"stream_options" in request.body for request in sent] == [True, False, False]
        assert sim.stats["b"].requests == 0


class TestEmbeddings:
    async def test_embeddings_fail_over_like_chat(self, stack, clock):
        sim, sim_url = await stack.sim(AZ, SIM_B)
        url = await stack.router(azure_config(sim.root, sim_url), clock=clock)
        first = await client(url).embeddings.create(model="embed", input=["one", "two"])
        assert len(first.data) == 2 and first.usage.prompt_tokens > 0
        sim.inject("az", Fault.rate_limit(retry_after=10))
        raw = await client(url).embeddings.with_raw_response.create(model="embed", input="x")
        assert raw.headers["x-router-route"] == "b/text-embedding-3-small"
        assert raw.headers["x-router-attempts"] == "2"


class TestResponses:
    async def test_responses_pass_through_and_fail_over(self, stack):
        sim, sim_url = await stack.sim(SIM_A, SIM_B)
        url = await stack.router(preferring_a(sim_url))
        response = await client(url).responses.create(model="gpt-4o", input="hi")
        assert response.output_text == "Hello from a via gpt-4o."
        sim.inject("a", Fault.server_error(503))
        raw = await client(url).responses.with_raw_response.create(model="gpt-4o", input="hi")
        assert raw.headers["x-router-route"] == "b/gpt-4o"
        assert sim.requests[-1].path == "/v1/responses"

    async def test_a_responses_stream_fails_over_before_its_first_delta(self, stack):
        sim, sim_url = await stack.sim(SIM_A, SIM_B)
        url = await stack.router(preferring_a(sim_url))
        sim.inject("a", Fault.stream_error(after_chunks=0))
        stream = await client(url).responses.create(model="gpt-4o", input="hi", stream=True)
        events = [event async for event in stream]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "Hello from b via gpt-4o."
        assert events[-1].type == "response.completed"

    async def test_a_responses_stream_cut_after_its_first_delta_ends_with_an_error(self, stack):
        sim, sim_url = await stack.sim(SIM_A, SIM_B)
        url = await stack.router(preferring_a(sim_url))
        sim.inject("a", Fault.stream_cut(after_chunks=2))
        stream = await client(url).responses.create(model="gpt-4o", input="hi", stream=True)
        events = [event async for event in stream]
        assert events[-1].type == "error"
        assert "upstream" in events[-1].message
        assert sim.stats["b"].requests == 0
