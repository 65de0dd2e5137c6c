"""Bad input gets a clear OpenAI-style error and never hurts another request."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import openai
import pytest
import yarl
from structlog.processors import JSONRenderer

from router.config import parse_config
from router.errors import ConfigError
from router.server import check_bind
from router.sim import Fault, SimKey
from router.telemetry.logs import REDACTED, RedactingRenderer, Redactor
from router.wire import fastjson
from tests.configs import key, model, route, routes_yaml, sim_key, sim_keys, two_keys_config
from tests.conftest import SIM_A, SIM_B, client

GOOD = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str, data: bytes, path: str = "/v1/chat/completions", **kwargs):
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=data, **kwargs) as response,
    ):
        return response.status, response.headers, await response.json()


_GOOD_TEXT = '{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b'{"model": "gpt-4o", "messages": [', 400, "invalid_json", id="truncated"),
        pytest.param(b"\xff\xfe not utf-8", 400, "invalid_json", id="not-utf8"),
        # JSON between systems is UTF-8 (RFC 8259 8.1); json.loads would read these, and
        # the router would then splice UTF-8 into them on their way upstream.
        pytest.param(_GOOD_TEXT.encode("utf-16-le"), 400, "invalid_json", id="utf16"),
        pytest.param(_GOOD_TEXT.encode("utf-16"), 400, "invalid_json", id="utf16-bom"),
        pytest.param(_GOOD_TEXT.encode("utf-32"), 400, "invalid_json", id="utf32"),
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
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        # An encoded slash is no known path: aiohttp's router does not decode it.
        ("POST", "/v1%2Fchat%2Fcompletions", 404, "not_found"),
    ],
)
async def test_unknown_paths_and_methods_get_json_errors(stack, method, path, status, code):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(two_keys_config(sim_url))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, yarl.URL(url + path, encoded=True)) as response,
    ):
        assert response.status == status
        error = (await response.json())["error"]
        assert error["message"] and error["code"] == code
        assert response.headers.get("Allow") == ("POST" if status == 405 else None)


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
        # Probes that use HEAD get the same status, without a body.
        async with session.head(f"{url}/readyz") as response:
            assert response.status == 503 and await response.read() == b""
        async with session.head(f"{url}/healthz") as response:
            assert response.status == 200 and await response.read() == b""
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


# -- bodies that parse into something the router cannot handle naively -------------------

ANT = SimKey(name="ant", api_key="sk-ant-sim-key-0000000001")
# (path, client model, may stream): every front endpoint, natively and translated.
ENDPOINTS = [
    pytest.param("/v1/chat/completions", "chat", id="chat"),
    pytest.param("/v1/responses", "chat", id="responses"),
    pytest.param("/v1/embeddings", "embed", id="embeddings"),
    pytest.param("/v1/messages", "claude", id="messages"),
    pytest.param("/v1/chat/completions", "chat-by-claude", id="chat-translated"),
    pytest.param("/v1/messages", "claude-by-gpt", id="messages-translated"),
]


def every_endpoint_config(sim_url: str, root: str) -> str:
    """Each client model names another upstream model, so every body is edited on its way."""
    return routes_yaml(
        keys=[sim_key(SIM_A, sim_url), sim_key(ANT, root, provider="anthropic")],
        models={
            "chat": model(route("a", "gpt-4o")),
            "embed": model(route("a", "text-embedding-3-small")),
            "claude": model(route("ant", "claude-sonnet-4-6")),
            "chat-by-claude": model(route("ant", "claude-sonnet-4-6")),
            "claude-by-gpt": model(route("a", "gpt-4o")),
        },
    )


def body_for(path: str, name: str, extra: dict, *, stream: bool, text: str = "hi") -> dict:
    if path == "/v1/embeddings":
        return {"model": name, "input": text, **extra}
    if path == "/v1/responses":
        return {"model": name, "input": text, "stream": stream, **extra}
    body = {"model": name, "messages": [{"role": "user", "content": text}], "stream": stream}
    if path == "/v1/messages":
        body["max_tokens"] = 32
    return {**body, **extra}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def post_raw(url: str, path: str, data: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=data, headers={"Content-Type": "application/json"}) as r,
    ):
        return r.status, await r.read()


def assert_invalid_request(path: str, status: int, raw: bytes) -> str:
    """A 400 in the endpoint's own dialect; its message."""
    assert status == 400, raw[:300]
    payload = json.loads(raw)
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
    return payload["error"]["message"]


@pytest.mark.parametrize(("path", "name"), ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_a_400_in_the_endpoints_dialect(
    stack, path, name, stream, depth
):
    if stream and path == "/v1/embeddings":
        pytest.skip("embeddings do not stream")
    sim, sim_url = await stack.sim(SIM_A, ANT)
    url = await stack.router(every_endpoint_config(sim_url, sim.root))
    body = json.dumps(body_for(path, name, {"x_deep": "DEEP"}, stream=stream)).encode()
    status, raw = await post_raw(url, path, body.replace(b'"DEEP"', nested(depth)))
    assert "nest" in assert_invalid_request(path, status, raw)
    # Unbalanced (100,000 `[` and nothing else) is just bad JSON.
    status, raw = await post_raw(url, path, body.replace(b'"DEEP"', b"[" * depth))
    assert_invalid_request(path, status, raw)
    assert sum(s.requests for s in sim.stats.values()) == 0
    # The deepest body accepted is served, every step after the parse included.
    status, raw = await post_raw(url, path, body.replace(b'"DEEP"', nested(126)))
    assert status == 200, raw[:300]


@pytest.mark.parametrize(("path", "name"), ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_lone_surrogate_in_a_body_the_router_edits_is_never_a_500(
    stack, path, name, stream
):
    """`\\ud800` is valid JSON that has no UTF-8 form. A second "model" (a value) makes
    the router re-serialise the body instead of splicing the name in; stream_options
    makes it re-serialise to ask for usage."""
    if stream and path == "/v1/embeddings":
        pytest.skip("embeddings do not stream")
    sim, sim_url = await stack.sim(SIM_A, ANT)
    url = await stack.router(every_endpoint_config(sim_url, sim.root))
    extra: dict = {"x_note": {"note": "model"}}
    if stream and path == "/v1/chat/completions":
        extra["stream_options"] = {"include_usage": False}
    body = json.dumps(body_for(path, name, extra, stream=stream, text="SURROGATE")).encode()
    body = body.replace(b"SURROGATE", b"hi \\ud800 there")
    status, raw = await post_raw(url, path, body)
    if status == 400:
        assert_invalid_request(path, status, raw)
        return
    # Forwarded: the upstream got valid JSON with the client's escape in it. (The
    # simulator itself refuses a surrogate on some APIs; what it answers is its own.)
    assert status != 500
    sent = sim.requests[-1].body
    assert "hi \\ud800 there" in json.dumps(json.loads(sent)), sent[:300]
    if status == 200 and stream:
        terminator = {"/v1/responses": b"response.completed", "/v1/messages": b"message_stop"}
        assert terminator.get(path, b"[DONE]") in raw and b"upstream_stream_error" not in raw


async def raw_exchange(url: str, head: str, *parts: bytes) -> tuple[int, bytes]:
    """A request written as is (framing a client library would not send), its parts
    apart, so that the handler reads the later ones; the status and body of the answer,
    read until the router closes."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in parts:
            await asyncio.sleep(0.1)
            writer.write(part)
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(("path", "name"), ENDPOINTS)
async def test_a_body_that_cannot_be_read_is_a_400_in_the_endpoints_dialect(
    stack, caplog, path, name
):
    """A body marked gzip that is not, and chunks whose framing breaks mid-body: the
    caller's fault, answered in its own dialect (not the router's 500), saying that
    the connection closes, and logged as nobody's error."""
    sim, sim_url = await stack.sim(SIM_A, ANT)
    url = await stack.router(every_endpoint_config(sim_url, sim.root))
    body = json.dumps(body_for(path, name, {}, stream=False)).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + path,
            data=b"not gzip at all",
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ) as response,
    ):
        raw = await response.read()
        assert "could not be read" in assert_invalid_request(path, response.status, raw)
        assert response.headers.get("Connection", "").lower() == "close"
    head = (
        f"POST {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        "Transfer-Encoding: chunked\nConnection: close\n"
    )
    good = b"%x\r\n%s\r\n" % (20, body[:20])
    status, raw = await raw_exchange(url, head, good, b"zz\r\n%s\r\n0\r\n\r\n" % body[20:])
    assert "could not be read" in assert_invalid_request(path, status, raw)
    assert sum(s.requests for s in sim.stats.values()) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


@pytest.mark.parametrize(("path", "name"), ENDPOINTS)
async def test_the_routers_own_failure_is_a_500_in_the_endpoints_dialect(
    stack, monkeypatch, path, name
):
    """A bug of the router's (here the body's depth check, made to fail: the only
    stand-in for our own code) answers in the client's dialect, pointing to the log."""

    def failing(body: bytes, payload: object) -> bool:
        raise RuntimeError("a bug in the router")

    monkeypatch.setattr(fastjson, "too_deep", failing)
    sim, sim_url = await stack.sim(SIM_A, ANT)
    url = await stack.router(every_endpoint_config(sim_url, sim.root))
    body = json.dumps(body_for(path, name, {}, stream=False)).encode()
    status, raw = await post_raw(url, path, body)
    assert status == 500, raw[:300]
    payload = json.loads(raw)
    if path == "/v1/messages":
        assert payload["type"] == "error" and payload["error"]["type"] == "api_error"
    else:
        assert payload["error"]["type"] == "server_error"
        assert payload["error"]["code"] == "internal_error"
    assert payload["error"]["message"].startswith("internal router error")
