"""Egress through a real HTTP proxy (tinyproxy, started per test): plain HTTP in absolute
form, HTTPS through CONNECT with TLS to the provider inside the tunnel, NO_PROXY and a
key's `proxy: none`, and a proxy that refuses, asks for credentials or is gone counting
as a connection failure of its route, which fails over."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from router.errors import UpstreamConnectionError
from router.sim import Fault
from router.types import Key, Proxy, Route, Timeouts
from router.upstream import Upstream
from router.upstream.client import HttpClient
from router.upstream.resolver import Resolver
from router.upstream.tunnel import ProxyRefused, open_tunnel
from tests.configs import model, route, routes_yaml, sim_key
from tests.conftest import HI, SIM_A, SIM_B, admin_state, ask, client
from tests.tinyproxy import free_port, stop, tinyproxy

pytestmark = pytest.mark.timeout(30)

# The router serves on uvloop, whose start_tls and transports differ from asyncio's.
BOTH_LOOPS = True

ANSWER = {
    "id": "chatcmpl-tls",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello over TLS."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
}


@asynccontextmanager
async def tls_provider(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """An OpenAI-shaped provider on https://localhost:PORT with a private CA: yields its
    api_base, the CA bundle to trust, and the Host header of every request it served."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    hosts: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        hosts.append(request.headers.get("Host", ""))
        await request.read()
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield f"https://localhost:{runner.addresses[0][1]}/v1", bundle, hosts
    finally:
        await runner.cleanup()


def one_model(*keys: tuple[str, dict]) -> str:
    """gpt-4o on the keys given, tried in that order (priorities 1, 2, ...)."""
    routes = [route(name, "gpt-4o", priority=n) for n, (name, _) in enumerate(keys, 1)]
    return routes_yaml(keys=keys, models={"gpt-4o": model(*routes)})


async def test_plain_http_goes_through_the_proxy_in_absolute_form_with_its_credentials(
    stack, tmp_path, capsys
):
    sim, sim_url = await stack.sim(SIM_A)
    async with tinyproxy(tmp_path, credentials=("alice", "s3cr3t")) as proxy:
        url = await stack.router(
            one_model(sim_key(SIM_A, sim_url)), environ={"http_proxy": proxy.url}
        )
        _, completion = await ask(url)
        assert completion.choices[0].message.content == "Hello from a via gpt-4o."
        stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        words = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(word or "" for word in words) == "Hello from a via gpt-4o."
        log = proxy.log()
    assert f"POST {sim_url}/chat/completions" in log  # tinyproxy logs the request line
    assert sim.stats["a"].served == 2
    logged = capsys.readouterr()
    assert "s3cr3t" not in logged.out + logged.err


async def test_https_goes_through_a_connect_tunnel_with_tls_to_the_provider_inside(
    stack, tmp_path, monkeypatch
):
    async with (
        tls_provider(tmp_path) as (api_base, bundle, hosts),
        tinyproxy(tmp_path, credentials=("alice", "s3cr3t")) as proxy,
    ):
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # README: how to trust a private CA
        yaml_text = one_model(("a", {"provider": "openai", "api_base": api_base, "api_key": "k"}))
        url = await stack.router(yaml_text, environ={"HTTPS_PROXY": proxy.url})
        for _ in range(2):  # the second on the pooled tunnel
            headers, completion = await ask(url)
            assert headers["x-router-route"] == "a/gpt-4o"
            assert completion.choices[0].message.content == "Hello over TLS."
        log = proxy.log()
    port = api_base.split(":")[2].split("/")[0]
    assert log.count(f"CONNECT localhost:{port}") == 1
    assert hosts == [f"localhost:{port}"] * 2


async def test_tunnel_checks_the_providers_certificate_not_the_proxys(tmp_path):
    async with (
        tls_provider(tmp_path) as (api_base, bundle, _),
        tinyproxy(tmp_path) as proxy,
    ):
        through = Proxy(host="127.0.0.1", port=proxy.port)
        trusting = ssl.create_default_context(cafile=str(bundle))
        trusted, untrusted = HttpClient(ssl_context=trusting), HttpClient()
        try:
            response = await trusted.post(
                f"{api_base}/chat/completions", b"{}", {}, connect_timeout=5, proxy=through
            )
            assert response.status == 200
            assert json.loads(await response.read()) == ANSWER
            response.release()
            with pytest.raises(ssl.SSLCertVerificationError):
                await untrusted.post(
                    f"{api_base}/chat/completions", b"{}", {}, connect_timeout=5, proxy=through
                )
        finally:
            trusted.close()
            untrusted.close()


async def test_no_proxy_and_a_keys_proxy_none_go_direct(stack, tmp_path):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    dead = f"http://127.0.0.1:{free_port()}"  # every request through it would fail
    yaml_text = one_model(
        sim_key(SIM_A, sim_url, proxy="none"),
        sim_key(SIM_B, sim_url.replace("127.0.0.1", "localhost")),
    )
    url = await stack.router(
        yaml_text, environ={"HTTP_PROXY": dead, "no_proxy": "example.com, .localhost"}
    )
    assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"
    sim.inject("a", Fault.server_error())
    headers, _ = await ask(url)  # b, direct: localhost is in no_proxy
    assert headers["x-router-route"] == "b/gpt-4o"


async def test_a_keys_proxy_overrides_the_environment(stack, tmp_path):
    sim, sim_url = await stack.sim(SIM_A)
    async with tinyproxy(tmp_path) as proxy:
        yaml_text = one_model(sim_key(SIM_A, sim_url, proxy=proxy.url))
        url = await stack.router(yaml_text, environ={"HTTP_PROXY": "http://127.0.0.1:1"})
        assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"
        assert f"POST {sim_url}/chat/completions" in proxy.log()
    assert sim.stats["a"].served == 1


@pytest.mark.parametrize("how", ["refuses CONNECT", "asks for credentials", "is gone"])
async def test_a_proxy_that_fails_is_a_connection_failure_and_the_route_fails_over(
    stack, tmp_path, monkeypatch, how
):
    _, sim_url = await stack.sim(SIM_B)
    async with (
        tls_provider(tmp_path) as (api_base, bundle, hosts),
        # CONNECT only to 443, and (second case) a password nobody gave
        tinyproxy(
            tmp_path,
            connect_ports=[443],
            credentials=("alice", "s3cr3t") if how == "asks for credentials" else None,
        ) as proxy,
    ):
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        # the proxy without its password; gone: a port nothing listens on
        through = f"http://127.0.0.1:{free_port() if how == 'is gone' else proxy.port}"
        if how == "asks for credentials":
            first = ("a", {"provider": "openai", "api_base": sim_url, "api_key": "k"})
        else:
            first = ("a", {"provider": "openai", "api_base": api_base, "api_key": "k"})
        first[1]["proxy"] = through
        url = await stack.router(one_model(first, sim_key(SIM_B, sim_url)))
        headers, _ = await ask(url)
        routes, _ = await admin_state(url)
    assert headers["x-router-route"] == "b/gpt-4o"
    assert headers["x-router-attempts"] == "2"
    assert hosts == []  # nothing reached the TLS provider
    assert routes["a/gpt-4o"]["last_error"] == "connection"
    assert "s3cr3t" not in json.dumps(routes)


async def test_a_proxy_that_dies_fails_its_routes_over(stack, tmp_path):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    async with tinyproxy(tmp_path) as proxy:
        yaml_text = one_model(
            sim_key(SIM_A, sim_url, proxy=proxy.url),
            sim_key(SIM_B, sim_url, proxy="none"),
        )
        url = await stack.router(yaml_text)
        assert (await ask(url))[0]["x-router-route"] == "a/gpt-4o"
        await stop(proxy.process)
        headers, _ = await ask(url)
    assert headers["x-router-route"] == "b/gpt-4o"
    assert sim.stats["a"].served == 1


async def test_a_refusal_maps_to_upstream_connection_error(tmp_path):
    async with tinyproxy(tmp_path, connect_ports=[443]) as proxy:
        key = Key(
            name="a",
            provider="openai",
            api_base="https://localhost:8443/v1",
            api_key="k",
            proxy=Proxy(host="127.0.0.1", port=proxy.port),
        )
        client = HttpClient()
        upstream = Upstream(client, Timeouts())
        try:
            with pytest.raises(UpstreamConnectionError, match="refused the tunnel"):
                await upstream.send(
                    Route(key=key, model="gpt-4o"),
                    f"{key.api_base}/chat/completions",
                    b"{}",
                    {},
                    head_timeout=5,
                )
        finally:
            upstream.close()
            client.close()


@pytest.mark.parametrize(
    "status_line",
    [b"HTTP/1.1 2\xb20 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 OK"],
    ids=["superscript-digit", "two-digits", "four-digits", "no-status"],
)
async def test_a_connect_answer_without_a_three_digit_status_is_a_refusal(status_line):
    """A malformed status from the proxy is its refusal (the route fails over), not a
    ValueError from int() that no failover catches: '²' passes str.isdigit()."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(status_line + b"\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProxyRefused, match="no HTTP status"):
            proxy = Proxy(host="127.0.0.1", port=port)
            await open_tunnel(proxy, "provider.example", 443, Resolver())
    finally:
        server.close()
        await server.wait_closed()
