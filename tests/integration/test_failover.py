"""Failover through the real router, driven with the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import openai
import pytest
from aiohttp import web

from router.sim import Fault, SimKey, SimProvider
from tests.configs import (
    key,
    model,
    preferring_a,
    route,
    routes_yaml,
    sim_keys,
    two_keys_config,
    two_keys_models,
)
from tests.conftest import (
    HI,
    SIM_A,
    SIM_B,
    SIM_C,
    admin_state,
    ask,
    client,
    raw_upstream,
    sync_client,
)


async def test_rate_limited_key_fails_over_and_is_not_hammered_while_cooling(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=30))

    headers, completion = await ask(url)
    assert headers["x-router-route"] == "b/gpt-4o"
    assert headers["x-router-attempts"] == "2"
    assert completion.choices[0].message.content == "Hello from b via gpt-4o."
    for _ in range(9):
        headers, _ = await ask(url)
        assert headers["x-router-route"] == "b/gpt-4o"
        assert headers["x-router-attempts"] == "1"
    assert sim.stats["a"].requests == 1  # only the request that got the 429
    assert sim.stats["b"].served == 10


async def test_cooled_route_serves_again_once_its_retry_after_has_passed(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    await ask(url)
    clock.advance(29)
    assert (await ask(url))[0]["x-router-route"] == "b/gpt-4o"
    clock.advance(1.5)
    assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"
    assert sim.stats["a"].served == 1


async def test_route_whose_headers_say_none_left_is_skipped_not_tried(stack, clock):
    # Honest limits: key a allows 2 requests a minute; the router reads the
    # x-ratelimit-* headers of its answers and stops sending before a 429.
    limited = SimKey(name="a", api_key=SIM_A.api_key, rpm=2)
    sim, sim_url = await stack.sim(limited, SIM_B, clock=clock)
    url = await stack.router(preferring_a(sim_url), clock=clock)
    routes = [(await ask(url))[0]["x-router-route"] for _ in range(4)]
    assert routes == ["a/gpt-4o", "a/gpt-4o", "b/gpt-4o", "b/gpt-4o"]
    assert sim.stats["a"].requests == 2 and sim.stats["a"].rejected == 0
    clock.advance(61)  # the bucket is full again
    assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"


async def test_model_falls_back_to_the_cheaper_one_when_its_routes_are_limited(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(two_keys_config(sim_url, fallback=["gpt-4o-mini"]), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=20))
    sim.inject("b", Fault.rate_limit(retry_after=20))
    headers, completion = await ask(url, temperature=0.2)
    assert headers["x-router-route"] == "c/gpt-4o-mini"
    assert headers["x-router-attempts"] == "3"
    assert completion.model == "gpt-4o-mini"
    sent = json.loads(sim.requests[-1].body)
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.2


async def test_exhausted_pool_answers_429_with_retry_after_of_the_earliest_route(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    no_wait = {"max_wait": 0}  # the 429 at once: a FakeClock does not move while waiting
    url = await stack.router(two_keys_config(sim_url, failover=no_wait), clock=clock)
    sim.inject("a", Fault.rate_limit(retry_after=12))
    sim.inject("b", Fault.rate_limit(retry_after=7))
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(url)
    response = caught.value.response
    assert response.headers["retry-after"] == "7"
    assert response.headers["retry-after-ms"] == "7000"
    assert response.headers["x-router-attempts"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    assert "rate limited" in caught.value.message

    clock.advance(3)
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(url)
    assert caught.value.response.headers["retry-after"] == "4"
    assert caught.value.response.headers["x-router-attempts"] == "0"
    assert sim.stats["a"].requests == 1 and sim.stats["b"].requests == 1


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.auth(), id="401"),
        pytest.param(Fault.insufficient_quota(), id="insufficient_quota"),
    ],
)
async def test_dead_key_is_taken_out_of_rotation_for_all_its_routes(stack, clock, fault):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    config = routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B, SIM_C),
        models={
            "gpt-4o": model(route("a", "gpt-4o"), route("b", "gpt-4o", priority=2)),
            "gpt-4o-mini": model(route("a", "gpt-4o-mini"), route("b", "gpt-4o-mini", priority=2)),
        },
    )
    url = await stack.router(config, clock=clock)
    sim.inject("a", fault)
    assert (await ask(url))[0]["x-router-route"] == "b/gpt-4o"
    for _ in range(3):
        assert (await ask(url))[0]["x-router-route"] == "b/gpt-4o"
        # the key's other model is out too, though it never failed itself
        assert (await ask(url, model="gpt-4o-mini"))[0]["x-router-route"] == "b/gpt-4o-mini"
    assert sim.stats["a"].requests == 1
    clock.advance(600)  # still out ten minutes later
    assert (await ask(url))[0]["x-router-route"] == "b/gpt-4o"


async def test_server_errors_fail_over_and_open_the_circuit_then_probe(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock)
    faults = [Fault.server_error(500), Fault.server_error(502), Fault.overloaded()] * 2
    sim.inject("a", *faults[:5])
    for _ in range(5):  # breaker_failures is 5 by default, all of a's calls failed
        assert (await ask(url))[0]["x-router-route"] == "b/gpt-4o"
    assert (await ask(url))[0]["x-router-attempts"] == "1"  # circuit open: a not tried
    assert sim.stats["a"].requests == 5
    clock.advance(5.1)  # breaker_open is 5 s by default: one probe goes to a
    assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"


async def test_sporadic_errors_of_a_busy_route_do_not_open_its_circuit(stack, clock):
    # 5 failures within the window, but among 20 calls: under breaker_failure_rate 0.5.
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url), clock=clock)
    for _ in range(5):
        sim.inject("a", Fault.server_error(500))
        assert (await ask(url))[0]["x-router-route"] == "b/gpt-4o"
        for _ in range(3):
            assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"
    assert sim.stats["a"].requests == 20
    assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"  # still closed


async def test_first_byte_timeout_fails_over(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, timeouts={"first_byte": 0.3}))
    sim.inject("a", Fault.delay(5))
    headers, _ = await ask(url)
    assert headers["x-router-route"] == "b/gpt-4o"
    assert headers["x-router-attempts"] == "2"


async def test_connection_refused_fails_over(stack, unused_tcp_port):
    _sim, sim_url = await stack.sim(SIM_B)
    dead = f"http://127.0.0.1:{unused_tcp_port}/v1"
    config = routes_yaml(
        keys=[key("a", dead, api_key=SIM_A.api_key), *sim_keys(sim_url, SIM_B, SIM_C)],
        models=two_keys_models(priority_b=2),
    )
    url = await stack.router(config)
    headers, _ = await ask(url)
    assert headers["x-router-route"] == "b/gpt-4o"


async def test_the_requests_own_400_goes_back_unchanged_without_a_retry(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.bad_request("Invalid value for 'temperature'.", param="temperature"))
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(url, temperature=0.5)
    assert caught.value.body == {
        "message": "Invalid value for 'temperature'.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": None,
    }
    assert caught.value.response.headers["x-router-route"] == "a/gpt-4o"
    assert sim.stats["b"].requests == 0


async def test_an_upstream_error_echoing_the_key_reaches_the_client_redacted(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.bad_request(f"bad request for key {SIM_A.api_key} (echoed)"))
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(url)
    assert SIM_A.api_key not in caught.value.response.text
    assert caught.value.body["message"] == "bad request for key [redacted] (echoed)"


async def test_context_length_error_is_not_failed_over(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    sim.inject("a", Fault.context_length())
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(url)
    assert caught.value.code == "context_length_exceeded"
    assert sim.stats["b"].requests == 0


async def test_routes_down_rather_than_limited_answer_503(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url), clock=clock)
    sim.inject("a", Fault.server_error(500))
    sim.inject("b", Fault.server_error(503))
    with pytest.raises(openai.InternalServerError) as caught:
        await ask(url)
    assert caught.value.status_code == 503
    assert caught.value.code == "no_available_route"
    assert "a/gpt-4o: server_error" in caught.value.message


@pytest.mark.parametrize("status", [500, 502])
async def test_a_transient_failure_of_the_last_route_is_retried_by_the_sdk(stack, status):
    """One 5xx from a model's only route, which stays in rotation: the 503 says retry
    in a second, as the provider's own 5xx would have the SDK do, not "do not retry"
    (which made the SDK give up where it would have got through straight to the
    provider)."""
    sim, sim_url = await stack.sim(SIM_A)
    only_a = routes_yaml(
        keys=sim_keys(sim_url, SIM_A), models={"gpt-4o": model(route("a", "gpt-4o"))}
    )
    url = await stack.router(only_a)
    sim.inject("a", Fault.server_error(status))
    with pytest.raises(openai.InternalServerError) as caught:
        await ask(url)
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers.get("x-should-retry")) == ("1", None)
    sim.inject("a", Fault.server_error(status))
    completion = await client(url, max_retries=1).chat.completions.create(
        model="gpt-4o", messages=HI
    )
    assert completion.choices[0].message.content == "Hello from a via gpt-4o."
    assert sim.stats["a"].requests == 3  # the two 5xx, and the SDK's retry


async def test_attempt_cap_bounds_the_walk(stack, clock):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(
        two_keys_config(sim_url, fallback=["gpt-4o-mini"], failover={"max_attempts": 2}),
        clock=clock,
    )
    for name in "abc":
        sim.inject(name, Fault.server_error(500))
    with pytest.raises(openai.InternalServerError) as caught:
        await ask(url)
    assert caught.value.response.headers["x-router-attempts"] == "2"
    assert sum(sim.stats[name].requests for name in "abc") == 2


async def test_request_deadline_bounds_everything(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url, timeouts={"request": 0.5, "first_byte": 30}))
    sim.inject("a", Fault.hang())
    sim.inject("b", Fault.hang())
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(url)
    assert caught.value.status_code == 504
    assert caught.value.code == "request_deadline_exceeded"


async def test_upstream_gets_the_route_model_and_key_and_every_other_field_untouched(stack):
    sim, sim_url = await stack.sim(SIM_A)
    config = routes_yaml(
        keys=sim_keys(sim_url, SIM_A),
        models={"fast": model(route("a", "gpt-4.1-mini")), "gpt-4o": model(route("a", "gpt-4o"))},
    )
    url = await stack.router(config)
    raw = await client(url).chat.completions.with_raw_response.create(
        model="fast", messages=HI, temperature=0.3, user="u-1", extra_body={"custom": [1, 2]}
    )
    assert raw.headers["x-router-route"] == "a/gpt-4.1-mini"
    recorded = sim.requests[-1]
    sent = json.loads(recorded.body)
    assert sent == {
        "model": "gpt-4.1-mini",
        "messages": HI,
        "temperature": 0.3,
        "user": "u-1",
        "custom": [1, 2],
    }
    assert recorded.headers["authorization"] == "Bearer sk-sim-key-a-000001"
    assert "client-token" not in json.dumps(recorded.headers)

    # Same model name upstream: the client's very bytes go out, whitespace and all.
    body = json.dumps({"model": "gpt-4o", "messages": HI, "temperature": 1}, indent=1).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", data=body) as response,
    ):
        assert response.status == 200
    assert sim.requests[-1].body == body

    # Another name upstream: only the model's value changes, the rest is the client's.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", data=body.replace(b"gpt-4o", b"fast")),
    ):
        pass
    assert sim.requests[-1].body == body.replace(b"gpt-4o", b"gpt-4.1-mini")


async def test_the_openai_passthrough_path_never_imports_litellm():
    # litellm costs seconds to import (litellm-notes.md); OpenAI-format routes must not.
    # A fresh interpreter: other tests in this process may import it on purpose.
    script = """
import asyncio, sys
import openai
from router.config import parse_config
from router.server import bound_port, start
from router.sim import SimKey, SimProvider

async def main():
    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-key-a-000001")])
    async with sim.serve() as sim_url:
        config = parse_config(
            f'keys: {{a: {{provider: openai, api_base: "{sim_url}", '
            'api_key: sk-sim-key-a-000001}}\\n'
            'models: {gpt-4o: {routes: [{key: a, model: gpt-4o}]}}',
            source="routes.yaml", environ={},
        )
        runner = await start(config, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{bound_port(runner)}/v1"
        sdk = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
        hi = [{"role": "user", "content": "hi"}]
        await sdk.chat.completions.create(model="gpt-4o", messages=hi)
        stream = await sdk.chat.completions.create(model="gpt-4o", messages=hi, stream=True)
        [chunk async for chunk in stream]
        await runner.cleanup()
    print("litellm" in sys.modules)

asyncio.run(main())
"""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip().splitlines()[-1] == "False"


async def test_sync_sdk_client_is_served(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))

    def call() -> str:
        completion = sync_client(url).chat.completions.create(model="gpt-4o", messages=HI)
        return completion.choices[0].message.content or ""

    assert (await asyncio.to_thread(call)).startswith("Hello from")


async def test_a_restarted_upstream_serves_again_with_the_first_request_after_it(stack):
    # Both routes of gpt-4o reach one simulator. It goes down (connection refused) while
    # requests keep coming, long enough for both circuits to open, and comes back on the
    # same port. With every route open the router probes at once instead of answering
    # 503 until the open period ends.
    sim = SimProvider(keys=(SIM_A, SIM_B, SIM_C))
    serving = sim.serve()
    sim_url = await serving.__aenter__()
    port = int(sim_url.rsplit(":", 1)[1].split("/")[0])
    try:
        url = await stack.router(two_keys_config(sim_url, failover={"breaker_open": 30}))
        assert (await ask(url))[0]["x-router-route"] in ("a/gpt-4o", "b/gpt-4o")
    finally:
        await serving.__aexit__(None, None, None)

    loop = asyncio.get_running_loop()
    for _ in range(8):
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(url)
        assert caught.value.status_code == 503
    routes, _ = await admin_state(url)
    assert {routes[r]["circuit"] for r in ("a/gpt-4o", "b/gpt-4o")} == {"open"}

    async with sim.serve(port=port):
        back = loop.time()
        tries = 0
        while True:
            tries += 1
            try:
                headers, _ = await ask(url)
                break
            except openai.APIStatusError:
                assert tries < 20 and loop.time() - back < 10, "no recovery"
                await asyncio.sleep(0.1)
        assert tries <= 2  # a pooled connection to the old process may fail once
        routes, _ = await admin_state(url)
        assert routes[headers["x-router-route"]]["circuit"] == "closed"


async def test_a_request_larger_than_a_keys_whole_token_limit_is_left_to_the_provider(stack, clock):
    # The key allows 1,000 tokens a minute and said so on its last answer. A request
    # asking for 5,000 can never fit, and no wait would change that: the router does
    # not answer a 429 of its own ("recovers in 0.0s") but sends it, and the provider's
    # own "Request too large" goes back.
    limited = SimKey(name="a", api_key=SIM_A.api_key, tpm=1000)
    sim, sim_url = await stack.sim(limited, clock=clock)
    config = routes_yaml(
        keys=sim_keys(sim_url, limited), models={"gpt-4o": model(route("a", "gpt-4o"))}
    )
    url = await stack.router(config, clock=clock)
    assert (await ask(url, max_tokens=10))[0]["x-router-route"] == "a/gpt-4o"
    clock.advance(0.05)  # the bucket is not full again yet: its reset lies ahead
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(url, max_tokens=5000)
    assert caught.value.response.headers["x-router-attempts"] == "1"
    assert "Request too large" in caught.value.message
    assert sim.stats["a"].requests == 2
    assert (await ask(url, max_tokens=10))[0]["x-router-route"] == "a/gpt-4o"  # not blamed


@pytest.mark.parametrize("retry_after", ["inf", "1e308", "99999999999"])
async def test_a_wait_no_upstream_could_mean_takes_the_key_out_for_a_day_at_most(
    stack, retry_after
):
    """`Retry-After: inf` (or millennia) from a broken or hostile upstream: the key is out
    for a day at most, and the requests after it get the router's own answer with a
    finite Retry-After, not a 500 from its header's arithmetic."""

    async def refusing(request: web.Request) -> web.Response:
        await request.read()
        error = {"error": {"message": "slow down", "type": "requests", "code": None}}
        return web.json_response(error, status=429, headers={"Retry-After": retry_after})

    async with raw_upstream("/v1/chat/completions", refusing) as upstream:
        url = await stack.router(
            routes_yaml(
                keys=[key("a", f"{upstream}/v1", api_key=SIM_A.api_key)],
                models={"gpt-4o": model(route("a", "gpt-4o"))},
                failover={"max_wait": 0},
            )
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(
                    f"{url}/v1/chat/completions", json={"model": "gpt-4o", "messages": HI}
                ) as response:
                    assert response.status in (429, 503), await response.text()
                    body = await response.json()
                    assert body["error"]["type"] != "internal_error"
                    wait = float(response.headers.get("retry-after", "0"))
                    assert 0 <= wait <= 86_400
