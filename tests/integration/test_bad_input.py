"""Bad input gets a clear OpenAI-style error and never hurts another request."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest
from structlog.processors import JSONRenderer

from router.config import parse_config
from router.errors import ConfigError
from router.server import check_bind
from router.sim import Fault
from router.telemetry.logs import REDACTED, RedactingRenderer, Redactor
from tests.configs import key, model, route, routes_yaml, sim_keys, two_keys_config
from tests.conftest import SIM_A, SIM_B, client

GOOD = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str, data: bytes, path: str = "/v1/chat/completions", **kwargs):
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=data, **kwargs) as response,
    ):
        return response.status, response.headers, await response.json()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b'{"model": "gpt-4o", "messages": [', 400, "invalid_json", id="truncated"),
        pytest.param(b"\xff\xfe not utf-8", 400, "invalid_json", id="not-utf8"),
        pytest.param(b"", 400, "invalid_json", id="empty"),
        pytest.param(b'["model", "gpt-4o"]', 400, "invalid_body", id="array"),
        pytest.param(b'"gpt-4o"', 400, "invalid_body", id="string"),
        pytest.param(b'{"messages": []}', 400, "missing_model", id="no-model"),
        pytest.param(b'{"model": 42, "messages": []}', 400, "missing_model", id="model-not-str"),
        pytest.param(
            b'{"model": "random-123", "messages": []}', 404, "model_not_found", id="unknown-model"
        ),
    ],
)
async def test_bad_body_gets_an_openai_style_error(stack, body, status, code):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))
    got_status, headers, payload = await post(url, body)
    assert got_status == status
    assert payload["error"]["code"] == code
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]
    assert headers["x-should-retry"] == "false"
    assert headers["x-router-attempts"] == "0"
    assert "x-request-id" in headers
    assert sum(s.requests for s in sim.stats.values()) == 0


async def test_unknown_model_is_a_not_found_error_for_the_sdk(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))
    with pytest.raises(openai.NotFoundError) as caught:
        await client(url).chat.completions.create(model="gpt-5-nope", messages=GOOD["messages"])
    assert "gpt-5-nope" in caught.value.message and "gpt-4o" in caught.value.message


async def test_oversized_body_is_refused_with_413(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url, server={"max_body_bytes": 2000}))
    big = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    status, _, payload = await post(url, big)
    assert status == 413
    assert payload["error"]["code"] == "request_too_large"
    assert (await post(url, json.dumps(GOOD).encode()))[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nothing-here", 404), ("GET", "/v1/chat/completions", 405)],
)
async def test_unknown_paths_and_methods_get_json_errors(stack, method, path, status):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path) as response,
    ):
        assert response.status == status
        assert (await response.json())["error"]["message"]


async def test_bad_requests_do_not_disturb_good_ones_running_beside_them(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))
    bad_bodies = [b"{", b"[]", b'{"model": null}', b'{"model": "x"}', b"\x00" * 100] * 10
    good = json.dumps(GOOD).encode()
    results = await asyncio.gather(
        *(post(url, body) for body in bad_bodies), *(post(url, good) for _ in range(50))
    )
    assert [status for status, _, _ in results[len(bad_bodies) :]] == [200] * 50
    assert all(400 <= status < 500 for status, _, _ in results[: len(bad_bodies)])


async def test_client_keys_are_required_when_configured(stack):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    config = two_keys_config(sim_url, server={"client_keys": ["${ROUTER_KEY}"]})
    url = await stack.router(config, environ={"ROUTER_KEY": "router-secret-123"})
    messages = GOOD["messages"]
    with pytest.raises(openai.AuthenticationError):
        await client(url).chat.completions.create(model="gpt-4o", messages=messages)
    good = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="router-secret-123", max_retries=0)
    assert (await good.chat.completions.create(model="gpt-4o", messages=messages)).choices
    status, _, _ = await post(
        url, json.dumps(GOOD).encode(), headers={"x-api-key": "router-secret-123"}
    )
    assert status == 200
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/healthz") as response,
    ):  # probes need no key
        assert response.status == 200


def test_an_open_router_refuses_a_non_loopback_address():
    config = parse_config(
        routes_yaml(
            keys=[key("a", api_key="sk-x-000000000000")], models={"m": model(route("a", "m"))}
        ),
        source="routes.yaml",
        environ={},
    )
    check_bind(config, "127.0.0.1")
    with pytest.raises(ConfigError, match="client_keys"):
        check_bind(config, "0.0.0.0")


async def test_models_health_and_readiness(stack, clock):
    sim, sim_url = await stack.sim(SIM_A)
    config = routes_yaml(
        keys=sim_keys(sim_url, SIM_A),
        models={"gpt-4o": model(route("a", "gpt-4o")), "cheap": model(route("a", "gpt-4o-mini"))},
    )
    url = await stack.router(config, clock=clock)
    models = await client(url).models.list()
    assert [m.id for m in models.data] == ["gpt-4o", "cheap"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/readyz") as response,
    ):
        assert response.status == 200
        sim.inject("a", Fault.auth())  # the only key is revoked: nothing can serve now
        with pytest.raises(openai.APIStatusError):
            await client(url).chat.completions.create(model="gpt-4o", messages=GOOD["messages"])
        async with session.get(f"{url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["routes_available"] == 0
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200


def test_redactor_removes_keys_from_every_field_of_the_rendered_line():
    render = RedactingRenderer(JSONRenderer(), Redactor(["my-literal-secret-key", 'q"uote-key']))
    event = {
        "event": "x",
        "header": "Authorization: Bearer abcdefghijklmnop",
        "nested": {"list": ["sk-proj-ABCDEFGHIJKLMNOPQRSTUV", ("my-literal-secret-key",)]},
        "url": "https://h/v1?key=AIzaSyA1234567890abcdefghijklmnopqrstu",
        # Assembled at run time so the source holds nothing shaped like a key.
        "ant": "x-api-key: " + "sk-ant-" + "api03-abcdefghijklmnop",
        "escaped": 'a key with a quote: q"uote-key',
        "n": 3,
    }
    line = render(None, "info", dict(event))
    for secret in (
        "abcdefghijklmnop",
        "ABCDEFGHIJKLMNOP",
        "my-literal-secret-key",
        "AIzaSyA1234567890",
        "sk-ant-api03",
        "uote-key",
    ):
        assert secret not in line
    parsed = json.loads(line)  # still valid JSON
    assert parsed["n"] == 3 and REDACTED in parsed["header"]
