"""A key's `proxy:` on requests translated through litellm, through a real tinyproxy:
chat completions served by the simulated Gemini (a provider reached only through
litellm), by the simulated Anthropic (litellm's Anthropic handler), by the simulated
OpenAI as OpenRouter, DeepSeek, Mistral and Groq (litellm's generic HTTP handler) and as
Perplexity (an OpenAI SDK client), and Anthropic
Messages served by the simulated OpenAI and Azure (litellm's OpenAI-compatible
handlers, which take an OpenAI SDK client). The key's proxy carries them (plain HTTP,
and HTTPS through CONNECT with a private CA); `proxy: none` goes direct whatever
HTTP(S)_PROXY says; a dead proxy is a connection failure of the route, which fails
over."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import trustme
from aiohttp import web

from router.upstream.keepalive import IDLE_SECONDS
from router.upstream.translate import egress as translate_egress
from tests.configs import key, model, route, routes_yaml, sim_key
from tests.conftest import HI, SIM_A, SIM_B, admin_state, ask, raw_upstream
from tests.integration.test_keepalive import PROC_TCP, timers_to
from tests.tinyproxy import free_port, tinyproxy

pytestmark = pytest.mark.timeout(60)  # the first test pays for importing litellm (~3 s)

# The router serves on uvloop, whose transports differ from asyncio's.
BOTH_LOOPS = True

GEMINI = "gemini-2.0-flash"
CLAUDE = "claude-haiku-4-5"
# (provider, upstream model, the path litellm posts to for a non-streaming chat)
TRANSLATED = [
    pytest.param("gemini", GEMINI, f"/v1beta/models/{GEMINI}:generateContent", id="gemini"),
    pytest.param("anthropic", CLAUDE, "/v1/messages", id="anthropic"),
    # OpenAI-compatible providers that litellm sends with its generic HTTP handler.
    pytest.param("openrouter", "openai/gpt-4o", "/v1/chat/completions", id="openrouter"),
    pytest.param("deepseek", "deepseek-chat", "/v1/chat/completions", id="deepseek"),
    pytest.param("mistral", "mistral-small-latest", "/v1/chat/completions", id="mistral"),
    pytest.param("groq", "llama-3.3-70b-versatile", "/v1/chat/completions", id="groq"),
    # One that litellm sends as a custom OpenAI provider, with an OpenAI SDK client.
    pytest.param("perplexity", "sonar", "/v1/chat/completions", id="perplexity"),
]
# The path of a provider's api_base after the host, where it has one.
_BASE_PATH = dict.fromkeys(("openrouter", "deepseek", "mistral", "groq", "perplexity"), "/v1")


def translated_key(provider: str, root: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    """SIM_A as a key of `provider` on the simulator."""
    base = root + _BASE_PATH.get(provider, "")
    return key(SIM_A.name, base, api_key=SIM_A.api_key, provider=provider, **extra)


def chat_model(*keys: tuple[str, dict[str, Any]], upstream: str) -> str:
    """`chat` on the keys given, in that order; each key serves its own model name."""
    routes = [
        route(name, upstream if fields["provider"] != "openai" else "gpt-4o", priority=n)
        for n, (name, fields) in enumerate(keys, 1)
    ]
    return routes_yaml(keys=keys, models={"chat": model(*routes)})


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """litellm reads the proxy variables from the process environment on every request."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.mark.parametrize(("provider", "upstream", "path"), TRANSLATED)
async def test_a_translated_request_goes_through_its_keys_proxy(
    stack, tmp_path, capsys, no_proxy_variables, provider, upstream, path
):
    sim, _ = await stack.sim(SIM_A)
    async with tinyproxy(tmp_path, credentials=("alice", "s3cr3t")) as proxy:
        proxied = translated_key(provider, sim.root, proxy=proxy.url)
        url = await stack.router(chat_model(proxied, upstream=upstream))
        headers, completion = await ask(url, model="chat")
        assert headers["x-router-route"] == f"a/{upstream}"
        assert completion.choices[0].message.content == f"Hello from a via {upstream}."
        _, again = await ask(url, model="chat", stream=True)
        words = [chunk.choices[0].delta.content async for chunk in again if chunk.choices]
        assert "".join(word or "" for word in words) == f"Hello from a via {upstream}."
        log = proxy.log()
    assert f"POST {sim.root}{path}" in log  # tinyproxy logs the request line
    assert log.count(f"POST {sim.root}/") == 2  # the stream too
    assert sim.stats["a"].served == 2
    logged = capsys.readouterr()
    assert "s3cr3t" not in logged.out + logged.err


@pytest.mark.parametrize(("provider", "upstream", "path"), TRANSLATED)
async def test_a_translated_request_of_a_key_with_proxy_none_goes_direct(
    stack, no_proxy_variables, provider, upstream, path
):
    sim, _ = await stack.sim(SIM_A)
    dead = f"http://127.0.0.1:{free_port()}"  # every request through it would fail
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        no_proxy_variables.setenv(name, dead)
    yaml_text = chat_model(translated_key(provider, sim.root, proxy="none"), upstream=upstream)
    url = await stack.router(yaml_text, environ={"HTTP_PROXY": dead, "HTTPS_PROXY": dead})
    # aiohttp's client reads no proxy variable (the SDK's httpx would take the dead one)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HI}) as got,
    ):
        assert got.status == 200, await got.text()
        assert got.headers["x-router-route"] == f"a/{upstream}"
        completion = await got.json()
    assert completion["choices"][0]["message"]["content"] == f"Hello from a via {upstream}."
    assert sim.stats["a"].served == 1


@pytest.mark.parametrize(("provider", "upstream", "path"), TRANSLATED)
async def test_a_translated_request_through_a_dead_proxy_fails_over_as_a_connection_failure(
    stack, no_proxy_variables, provider, upstream, path
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    dead = f"http://127.0.0.1:{free_port()}"
    yaml_text = chat_model(
        translated_key(provider, sim.root, proxy=dead),
        sim_key(SIM_B, sim_url, proxy="none"),
        upstream=upstream,
    )
    url = await stack.router(yaml_text)
    headers, completion = await ask(url, model="chat")
    routes, _ = await admin_state(url)
    assert headers["x-router-route"] == "b/gpt-4o"
    assert headers["x-router-attempts"] == "2"
    assert completion.choices[0].message.content == "Hello from b via gpt-4o."
    assert routes[f"a/{upstream}"]["last_error"] == "connection"
    assert sim.stats["a"].served == 0


async def test_a_keys_own_client_follows_no_redirect_either(stack, tmp_path, no_proxy_variables):
    """The client built for a key's proxy keeps the router's rule: a redirect is the
    provider's answer (a misconfigured route, which fails over), and the key never
    travels to where the Location points."""
    reached: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.json_response({"error": {"type": "not_found_error", "message": "no"}})

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(f"{target}/v1/messages")

    async with (
        raw_upstream("/v1/messages", elsewhere) as target,
        raw_upstream("/v1/messages", redirect) as bad,
        tinyproxy(tmp_path) as proxy,
    ):
        _, sim_url = await stack.sim(SIM_B)
        yaml_text = chat_model(
            key("bad", bad, api_key="sk-ant-bad-0000000001", provider="anthropic", proxy=proxy.url),
            sim_key(SIM_B, sim_url, proxy="none"),
            upstream=CLAUDE,
        )
        url = await stack.router(yaml_text)
        headers, _ = await ask(url, model="chat")
        log = proxy.log()
    assert headers["x-router-route"] == "b/gpt-4o"
    assert f"POST {bad}/v1/messages" in log
    assert reached == []


MESSAGE = {
    "id": "msg_tls",
    "type": "message",
    "role": "assistant",
    "model": CLAUDE,
    "content": [{"type": "text", "text": "Hello over TLS."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 3},
}


@asynccontextmanager
async def tls_anthropic(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """An Anthropic-shaped provider on https://localhost:PORT with a private CA: yields
    its api_base, the CA bundle to trust, and the Host header of every request served."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    hosts: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        hosts.append(request.headers.get("Host", ""))
        await request.read()
        return web.json_response(MESSAGE)

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield f"https://localhost:{runner.addresses[0][1]}", bundle, hosts
    finally:
        await runner.cleanup()


async def test_a_translated_https_request_goes_through_a_connect_tunnel(
    stack, tmp_path, no_proxy_variables
):
    async with (
        tls_anthropic(tmp_path) as (api_base, bundle, hosts),
        tinyproxy(tmp_path, credentials=("alice", "s3cr3t")) as proxy,
    ):
        no_proxy_variables.setenv("SSL_CERT_FILE", str(bundle))  # litellm's TLS settings
        claude = key("a", api_base, api_key="sk-ant-000000000001", provider="anthropic")
        claude[1]["proxy"] = proxy.url
        url = await stack.router(chat_model(claude, upstream=CLAUDE))
        for _ in range(2):  # the second on the pooled tunnel
            headers, completion = await ask(url, model="chat")
            assert headers["x-router-route"] == f"a/{CLAUDE}"
            assert completion.choices[0].message.content == "Hello over TLS."
        log = proxy.log()
    port = api_base.rsplit(":", 1)[1]
    assert log.count(f"CONNECT localhost:{port}") == 1
    assert hosts == [f"localhost:{port}"] * 2


# -- Anthropic Messages onto OpenAI and Azure keys (litellm's OpenAI-compatible handlers)

GPT = "gpt-4o"
AZURE_VERSION = "2024-10-21"
# (provider, the path and query litellm posts to)
OPENAI_FORMATS = [
    pytest.param("openai", "/v1/chat/completions", id="openai"),
    pytest.param(
        "azure",
        f"/openai/deployments/{GPT}/chat/completions?api-version={AZURE_VERSION}",
        id="azure",
    ),
]
MESSAGES: dict[str, Any] = {
    "model": "chat",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


def openai_format_key(provider: str, root: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    """SIM_A as an `openai` (base ends in /v1) or `azure` (the resource endpoint) key."""
    if provider == "openai":
        return key(SIM_A.name, f"{root}/v1", api_key=SIM_A.api_key, **extra)
    return key(
        SIM_A.name,
        root,
        api_key=SIM_A.api_key,
        provider="azure",
        api_version=AZURE_VERSION,
        **extra,
    )


def messages_model(*keys: tuple[str, dict[str, Any]]) -> str:
    """`chat` on the keys given, in that order, each serving gpt-4o."""
    routes = [route(name, GPT, priority=n) for n, (name, _) in enumerate(keys, 1)]
    return routes_yaml(keys=keys, models={"chat": model(*routes)})


def anthropic_client(url: str) -> anthropic.AsyncAnthropic:
    """An Anthropic SDK client that reads no proxy variable (the tests set dead ones)."""
    return anthropic.AsyncAnthropic(
        base_url=url,
        api_key="client",
        max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(trust_env=False),
    )


@pytest.mark.parametrize(("provider", "path"), OPENAI_FORMATS)
async def test_anthropic_messages_on_an_openai_format_key_go_through_its_proxy(
    stack, tmp_path, capsys, no_proxy_variables, provider, path
):
    sim, _ = await stack.sim(SIM_A)
    async with tinyproxy(tmp_path, credentials=("alice", "s3cr3t")) as proxy:
        url = await stack.router(
            messages_model(openai_format_key(provider, sim.root, proxy=proxy.url))
        )
        client = anthropic_client(url)
        raw = await client.messages.with_raw_response.create(**MESSAGES)
        message = await raw.parse()
        async with client.messages.stream(**MESSAGES) as stream:
            text = await stream.get_final_text()
        await client.close()
        log = proxy.log()
    assert raw.headers["x-router-route"] == f"a/{GPT}"
    assert message.content[0].text == f"Hello from a via {GPT}."  # type: ignore[union-attr]
    assert text == f"Hello from a via {GPT}."
    assert log.count(f"POST {sim.root}{path}") == 2  # tinyproxy logs the request line
    assert sim.stats["a"].served == 2
    logged = capsys.readouterr()
    assert "s3cr3t" not in logged.out + logged.err


@pytest.mark.parametrize(("provider", "path"), OPENAI_FORMATS)
async def test_anthropic_messages_on_an_openai_format_key_with_proxy_none_go_direct(
    stack, no_proxy_variables, provider, path
):
    sim, _ = await stack.sim(SIM_A)
    dead = f"http://127.0.0.1:{free_port()}"  # every request through it would fail
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        no_proxy_variables.setenv(name, dead)
    yaml_text = messages_model(openai_format_key(provider, sim.root, proxy="none"))
    url = await stack.router(yaml_text, environ={"HTTP_PROXY": dead, "HTTPS_PROXY": dead})
    client = anthropic_client(url)
    raw = await client.messages.with_raw_response.create(**MESSAGES)
    async with client.messages.stream(**MESSAGES) as stream:
        text = await stream.get_final_text()
    await client.close()
    assert raw.headers["x-router-route"] == f"a/{GPT}"
    assert (await raw.parse()).content[0].text == f"Hello from a via {GPT}."  # type: ignore[union-attr]
    assert text == f"Hello from a via {GPT}."
    assert sim.stats["a"].served == 2


@pytest.mark.parametrize(("provider", "path"), OPENAI_FORMATS)
async def test_anthropic_messages_through_a_dead_key_proxy_fail_over_as_a_connection_failure(
    stack, no_proxy_variables, provider, path
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    dead = f"http://127.0.0.1:{free_port()}"
    yaml_text = messages_model(
        openai_format_key(provider, sim.root, proxy=dead), sim_key(SIM_B, sim_url, proxy="none")
    )
    url = await stack.router(yaml_text)
    client = anthropic_client(url)
    raw = await client.messages.with_raw_response.create(**MESSAGES)
    await client.close()
    routes, _ = await admin_state(url)
    assert raw.headers["x-router-route"] == f"b/{GPT}"
    assert raw.headers["x-router-attempts"] == "2"
    assert (await raw.parse()).content[0].text == f"Hello from b via {GPT}."  # type: ignore[union-attr]
    assert routes[f"a/{GPT}"]["last_error"] == "connection"
    assert sim.stats["a"].served == 0


COMPLETION = {
    "id": "chatcmpl-v1",
    "object": "chat.completion",
    "created": 1,
    "model": GPT,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from v1."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
}


async def test_an_azure_key_on_the_v1_api_goes_through_its_proxy_to_the_v1_surface(
    stack, tmp_path, no_proxy_variables
):
    """An `api_version: v1` Azure key is served by litellm on the resource's `/openai/v1/`
    surface with a plain OpenAI client; the key's own client keeps that URL and its key."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("api-key") or request.headers.get("Authorization", ""))
        await request.read()
        return web.json_response(COMPLETION)

    async with (
        raw_upstream("/openai/v1/chat/completions", answer) as base,
        tinyproxy(tmp_path) as proxy,
    ):
        azure = key("a", base, api_key="az-000000000001", provider="azure", api_version="v1")
        azure[1]["proxy"] = proxy.url
        url = await stack.router(messages_model(azure))
        client = anthropic_client(url)
        message = await client.messages.create(**MESSAGES)
        await client.close()
        log = proxy.log()
    assert message.content[0].text == "Hello from v1."  # type: ignore[union-attr]
    assert f"POST {base}/openai/v1/chat/completions" in log
    assert seen == ["Bearer az-000000000001"]


async def test_an_openai_keys_own_client_follows_no_redirect(stack, tmp_path, no_proxy_variables):
    """As for Anthropic keys: a redirect is the provider's answer, and fails over."""
    reached: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.json_response(COMPLETION)

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(f"{target}/v1/chat/completions")

    async with (
        raw_upstream("/v1/chat/completions", elsewhere) as target,
        raw_upstream("/v1/chat/completions", redirect) as bad,
        tinyproxy(tmp_path) as proxy,
    ):
        _, sim_url = await stack.sim(SIM_B)
        yaml_text = messages_model(
            key("bad", f"{bad}/v1", api_key="sk-bad-0000000001", proxy=proxy.url),
            sim_key(SIM_B, sim_url, proxy="none"),
        )
        url = await stack.router(yaml_text)
        client = anthropic_client(url)
        raw = await client.messages.with_raw_response.create(**MESSAGES)
        await client.close()
        log = proxy.log()
    assert raw.headers["x-router-route"] == f"b/{GPT}"
    assert f"POST {bad}/v1/chat/completions" in log
    assert reached == []


async def test_a_keys_own_client_holds_more_than_httpx_s_100_connections(stack, no_proxy_variables):
    """httpx caps a client at 100 connections and queues the rest; litellm's own clients
    allow 500 to a host. A key's own client keeps litellm's cap: 101 requests in flight
    at once all reach the provider."""
    count = 101
    arrived: list[int] = []
    everyone = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await request.read()
        arrived.append(1)
        if len(arrived) == count:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), 20)  # the bound: a queued request never comes
        except TimeoutError:
            return web.json_response({"error": {"message": "not all arrived"}}, status=500)
        return web.json_response(COMPLETION)

    async with raw_upstream("/v1/chat/completions", hold) as base:
        proxied = key("a", f"{base}/v1", api_key="sk-held-0000000001", proxy="none")
        url = await stack.router(messages_model(proxied))
        connector = aiohttp.TCPConnector(limit=0)  # aiohttp's own cap is 100 too
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with session.post(f"{url}/v1/messages", json=MESSAGES) as got:
                    await got.read()
                    return got.status

            statuses = await asyncio.gather(*(one() for _ in range(count)))
    assert statuses == [200] * count
    assert len(arrived) == count


@pytest.mark.skipif(not PROC_TCP.exists(), reason="needs Linux's /proc/net/tcp")
async def test_a_keys_own_client_sends_keepalive_probes(stack, no_proxy_variables):
    """The connections of the clients the router builds for litellm keep TCP keepalive
    on, as the router's own do: a non-streamed answer that takes minutes behind a NAT
    gateway. Read while the provider holds its answer. (Through a key's proxy httpcore
    drops the options: its HTTPProxy does not hand them to its connections.)"""
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await request.read()
        holding.set()
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response(COMPLETION)

    async with raw_upstream("/v1/chat/completions", hold) as base:
        held = key("a", f"{base}/v1", api_key="sk-held-0000000001", proxy="none")
        url = await stack.router(messages_model(held))
        client = anthropic_client(url)
        asked = asyncio.create_task(client.messages.create(**MESSAGES))
        try:
            await asyncio.wait_for(holding.wait(), 10)
            timers = timers_to(int(base.rsplit(":", 1)[1]))
            release.set()
            await asyncio.wait_for(asked, 10)
        finally:
            release.set()
            await client.close()
    assert timers and all(timer == 2 and 0 < due <= IDLE_SECONDS for timer, due in timers), timers


async def test_a_keys_idle_translated_connections_are_closed_when_its_traffic_stops(stack):
    """httpcore closes an idle connection past its keep-alive only when its pool is
    next used: a key whose translated traffic stopped kept its connections open for
    good (or half closed by the provider). The egress sweep closes them."""
    _, sim_url = await stack.sim(SIM_A)
    port = int(sim_url.rsplit(":", 1)[1].split("/")[0])
    # An Anthropic client on an OpenAI key: litellm sends it with the key's own client.
    url = await stack.router(chat_model(sim_key(SIM_A, sim_url), upstream="gpt-4o"))
    client = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0)
    message = await client.messages.create(model="chat", max_tokens=16, messages=HI)
    assert message.content[0].text == "Hello from a via gpt-4o."
    assert timers_to(port)  # the translated request's connection, kept alive
    async with asyncio.timeout(20):  # httpx's 5 s expiry, then the next sweep
        while timers_to(port):  # noqa: ASYNC110 (the kernel's table has no event)
            await asyncio.sleep(0.25)


async def test_a_translated_tls_handshake_cut_short_leaves_no_socket_to_the_proxy(stack, tmp_path):
    """httpcore keeps a tunnel's connection to the proxy when its TLS handshake is cut
    short (the router's connect deadline, the client leaving): each such attempt
    through a key's proxy left its socket open, and its entry in the key's pool."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the tunnel's TLS hello and never answers it
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    try:
        async with tinyproxy(tmp_path) as proxy:
            proxy_port = int(proxy.url.rsplit(":", 1)[1])
            hung = key("hung", f"https://127.0.0.1:{target}/v1", api_key="sk-hung-00000001",
                       proxy=proxy.url)  # fmt: skip
            text = routes_yaml(keys=[hung], models={"chat": model(route("hung", "gpt-4o"))})
            url = await stack.router(text)
            # The client leaves mid-handshake, which cancels the attempt.
            client = anthropic.AsyncAnthropic(
                base_url=url, api_key="client", max_retries=0, timeout=1.5
            )
            for _ in range(3):  # an Anthropic client on an OpenAI key: translated
                with pytest.raises(anthropic.APITimeoutError):
                    await client.messages.create(model="chat", max_tokens=16, messages=HI)
            async with asyncio.timeout(5):
                while timers_to(proxy_port):  # noqa: ASYNC110 (the kernel's table has no event)
                    await asyncio.sleep(0.1)
            # Nor an entry in the key's pool, where each counted against its 500 for good.
            (key_client,) = translate_egress.open_clients()
            assert key_client._router_transport._pool.connections == []
    finally:
        server.close()


async def test_a_retry_after_a_connection_error_cuts_no_other_request_of_the_key(
    stack, tmp_path, no_proxy_variables
):
    """litellm's handler retries a connection error with a client on the key's shared
    transport, and closes that client once the retry returns: that closed the key's
    pool, and the key's other requests in flight were cut. Here one request is slow
    upstream while another's first TLS handshake meets a closed connection."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    answered = 0

    async def answer(request: web.Request) -> web.Response:
        nonlocal answered
        answered += 1
        await request.read()
        if answered == 1:
            await asyncio.sleep(1.5)  # in flight while the other request retries
        return web.json_response(MESSAGE)

    connections = 0

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relays each tunnel to the TLS server, but for the second, which it closes."""
        nonlocal connections
        connections += 1
        if connections == 2:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    relay = await asyncio.start_server(front, "127.0.0.1", 0)
    try:
        async with tinyproxy(tmp_path) as proxy:
            no_proxy_variables.setenv("SSL_CERT_FILE", str(bundle))  # litellm's TLS settings
            api_base = f"https://localhost:{relay.sockets[0].getsockname()[1]}"
            claude = key("a", api_base, api_key="sk-ant-000000000001", provider="anthropic")
            claude[1]["proxy"] = proxy.url
            url = await stack.router(chat_model(claude, upstream=CLAUDE))
            slow = asyncio.create_task(ask(url, model="chat"))
            await asyncio.sleep(0.5)
            _, retried = await ask(url, model="chat")  # litellm's retry serves it
            _, first = await slow
    finally:
        relay.close()
        await runner.cleanup()
    assert retried.choices[0].message.content == "Hello over TLS."
    assert first.choices[0].message.content == "Hello over TLS."
    assert (connections, answered) == (3, 2)
