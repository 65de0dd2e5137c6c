"""What a client's connection can and cannot make the router do (issue 17's front door)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import resource
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp.compression_utils import ZLibDecompressor
from structlog.testing import capture_logs

from router import client_connection
from router.config import parse_config
from router.server import start
from router.sim import Fault
from tests.configs import key, model, preferring_a, route, routes_yaml
from tests.conftest import HI, REPO, SIM_A, SIM_B, client
from tests.integration.test_cli import ENV

REQUEST = json.dumps({"model": "gpt-4o", "messages": HI}).encode()


async def _raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One request written byte for byte, so that no client library adds or drops a
    header; the connection is closed after the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(1 << 16)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_headers_the_clients_connection_header_nominates_stay_on_that_connection(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    body = json.dumps({"model": "gpt-4o", "messages": HI}).encode()
    answer = await _raw_post(
        url,
        "/v1/chat/completions",
        body,
        {
            "Connection": "close, X-Hop-Secret ,x-other-hop",
            "X-Hop-Secret": "for-the-next-hop-only",
            "X-Other-Hop": "1",
            "OpenAI-Beta": "assistants=v2",
        },
    )
    assert answer.startswith(b"HTTP/1.1 200")
    sent = {name.lower() for name in sim.requests[-1].headers}
    assert "openai-beta" in sent  # an end-to-end header still goes
    assert not {"x-hop-secret", "x-other-hop", "connection"} & sent


# -- timeouts ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _socket(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _head(url: str, extra: str = "") -> bytes:
    authority = url.removeprefix("http://")
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(REQUEST)}\r\n\r\n"
    ).encode() + REQUEST


def _dialect_error(text: bytes, anthropic: bool, code: str) -> str:
    """The message of an error body, once its shape is checked: Anthropic's
    `invalid_request_error`, or OpenAI's with `code`."""
    error = json.loads(text)
    if anthropic:
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    else:
        assert error["error"]["code"] == code
    return str(error["error"]["message"])


async def _closed_by_router(reader: asyncio.StreamReader) -> bytes:
    """Everything the router writes until it closes the connection (10 s at most)."""
    async with asyncio.timeout(10):
        return await reader.read()


async def test_a_head_sent_a_byte_at_a_time_is_cut_when_its_timeout_expires(stack):
    """Slowloris: each byte comes well inside header_timeout, the whole head never does."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(
        preferring_a(sim_url, server={"header_timeout": 0.3, "idle_timeout": 60})
    )
    async with _socket(url) as (reader, writer):

        async def dribble() -> None:
            for byte in _head(url, "X-Padding: " + "p" * 10_000 + "\r\n"):
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(dribble())
        try:
            assert await _closed_by_router(reader) == b""  # closed, nothing answered
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(
        preferring_a(sim_url, server={"idle_timeout": 0.3, "header_timeout": 60})
    )
    async with _socket(url) as (reader, writer), _socket(url) as (silent, _):
        writer.write(_head(url))
        answer = await _closed_by_router(reader)  # served, then idle until closed
        assert answer.startswith(b"HTTP/1.1 200") and b"Hello from a" in answer
        assert await _closed_by_router(silent) == b""  # never sent a byte


async def test_a_slow_head_is_not_cut_by_the_idle_timeout_once_it_has_begun(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(
        preferring_a(sim_url, server={"idle_timeout": 0.2, "header_timeout": 60})
    )
    async with _socket(url) as (reader, writer):
        head = _head(url, "Connection: close\r\n")
        for start in range(0, len(head), 40):  # about a second in all
            writer.write(head[start : start + 40])
            await asyncio.sleep(0.1)
        assert (await _closed_by_router(reader)).startswith(b"HTTP/1.1 200")


# -- the connection cap -----------------------------------------------------------------


async def test_idle_sockets_over_the_cap_make_room_oldest_first(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_connections": 5}))
    async with contextlib.AsyncExitStack() as sockets:
        idle = [await sockets.enter_async_context(_socket(url)) for _ in range(8)]
        completion = await client(url).chat.completions.create(model="gpt-4o", messages=HI)
        assert completion.choices[0].message.content == "Hello from a via gpt-4o."
        # 8 idle + 1 real connection at a cap of 5: the four oldest idle ones made room.
        for reader, _writer in idle[:4]:
            assert await _closed_by_router(reader) == b""


async def test_beyond_the_cap_of_busy_connections_a_new_one_gets_a_clean_503(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    sim.inject("a", Fault.delay(30), times=2)
    url = await stack.router(preferring_a(sim_url, server={"max_connections": 2}))
    busy = [
        asyncio.create_task(client(url).chat.completions.create(model="gpt-4o", messages=HI))
        for _ in range(2)
    ]
    try:
        async with asyncio.timeout(10):
            while sim.stats["a"].requests < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        async with _socket(url) as (reader, _writer):
            answer = await _closed_by_router(reader)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert b"connection: close" in head.lower()
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)


def _lower_open_files_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def test_1100_idle_sockets_do_not_stop_a_router_with_1024_open_files(stack, tmp_path):
    """The issue's case, as a process with the common default limit of 1024 open files:
    without a cap the router runs out of descriptors and accepts nothing more."""
    _sim, sim_url = await stack.sim(SIM_A)
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", sim_url, api_key="${SIM_KEY}")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0",
        stderr=asyncio.subprocess.PIPE, env={**ENV, "SIM_KEY": SIM_A.api_key}, cwd=REPO,
        preexec_fn=_lower_open_files_limit,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60), contextlib.AsyncExitStack() as sockets:
            assert process.stderr is not None
            while True:
                line = await process.stderr.readline()
                assert line, "router exited before listening"
                if json.loads(line)["event"] == "listening":
                    url = json.loads(line)["url"].removesuffix("/v1")
                    break
            for _ in range(1100):
                await sockets.enter_async_context(_socket(url))
            completion = await client(url).chat.completions.create(model="gpt-4o", messages=HI)
            assert completion.choices[0].message.content == "Hello from a via gpt-4o."
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- Host and Origin --------------------------------------------------------------------


async def _ask(
    url: str,
    path: str = "/v1/chat/completions",
    *,
    host: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    body: bytes = REQUEST,
    method: str = "POST",
) -> tuple[int, Any]:
    """One request written as a browser or curl would, with the Host given: status and
    the JSON body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or url.removeprefix('http://')}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Connection: close"]
    if method == "POST":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    async with _socket(url) as (reader, writer):
        writer.write(
            ("\r\n".join(lines) + "\r\n\r\n").encode() + (body if method == "POST" else b"")
        )
        answer = await _closed_by_router(reader)
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = b"".join(payload.split(b"\r\n")[1::2])
    return status, json.loads(payload) if payload.strip() else None


@pytest.mark.parametrize(
    "junk", ["@evil.example", "/evil.example", "0x"], ids=["at", "slash", "hex"]
)
async def test_a_host_whose_port_is_followed_by_more_is_no_loopback_name(stack, junk):
    """`127.0.0.1:4000@evil.example` or `[::1]:4000x` is no Host a browser sends, and
    nothing after a port may make a name loopback."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    port = url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}{junk}", f"[::1]:{port}{junk}", f"[::1]{junk}"):
        status, body = await _ask(url, host=host)
        assert (status, body["error"]["code"]) == (403, "host_not_allowed"), host
    assert not sim.requests


async def test_without_client_keys_a_foreign_host_is_refused_in_the_clients_dialect(stack):
    """DNS rebinding: a page on evil.example re-points its name at 127.0.0.1; its
    requests then reach the router with `Host: evil.example:<port>`."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    port = url.rsplit(":", 1)[1]
    status, body = await _ask(url, host=f"evil.example:{port}", content_type="text/plain")
    assert status == 403
    assert body["error"]["code"] == "host_not_allowed"
    assert body["error"]["type"] == "permission_error"
    messages = json.dumps({"model": "gpt-4o", "max_tokens": 10, "messages": HI}).encode()
    status, body = await _ask(url, "/v1/messages", host=f"evil.example:{port}", body=messages)
    assert (status, body["type"], body["error"]["type"]) == (403, "error", "permission_error")
    status, _ = await _ask(url, "/admin/routes", host=f"evil.example:{port}", method="GET")
    assert status == 403
    status, _ = await _ask(url, "/metrics", host=f"evil.example:{port}", method="GET")
    assert status == 403
    assert not sim.requests  # nothing was spent
    # Probes come from the container's or pod's own address and tell nothing.
    status, _ = await _ask(url, "/healthz", host=f"10.1.2.3:{port}", method="GET")
    assert status == 200


async def test_without_client_keys_a_cross_site_origin_is_refused(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    port = url.rsplit(":", 1)[1]
    for origin in ("https://evil.example", f"http://localhost:{int(port) + 1}", "null"):
        status, body = await _ask(url, headers={"Origin": origin}, content_type="text/plain")
        assert (status, body["error"]["code"]) == (403, "origin_not_allowed"), origin
    status, _ = await _ask(
        url, "/admin/routes", method="GET", headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    assert not sim.requests
    # The router's own status page is same-origin.
    status, _ = await _ask(url, "/admin/routes", method="GET", headers={"Origin": url})
    assert status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "127.0.0.2", "[::1]"])
async def test_curl_from_the_same_machine_keeps_working(stack, host):
    """`curl -d` sends form-urlencoded, no Origin, and the loopback name it was given."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    port = url.rsplit(":", 1)[1]
    status, body = await _ask(
        url, host=f"{host}:{port}", content_type="application/x-www-form-urlencoded"
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "Hello from a via gpt-4o."


async def test_configured_hosts_and_origins_are_answered(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    server = {"allowed_hosts": ["Router.Example"], "allowed_origins": ["https://app.example"]}
    url = await stack.router(preferring_a(sim_url, server=server))
    status, _ = await _ask(url, host="router.example", headers={"Origin": "https://app.example"})
    assert status == 200
    status, body = await _ask(url, host="other.example")
    assert (status, body["error"]["code"]) == (403, "host_not_allowed")


async def test_with_client_keys_the_key_guards_and_hosts_are_checked_only_if_listed(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    keyed = {"client_keys": ["${ROUTER_KEY}"]}
    environ = {"ROUTER_KEY": "router-key-1"}
    url = await stack.router(preferring_a(sim_url, server=keyed), environ=environ)
    bearer = {"Authorization": "Bearer router-key-1", "Origin": "https://cursor.example"}
    status, _ = await _ask(url, host="abc.trycloudflare.com", headers=bearer)
    assert status == 200  # a tunnel's name and a browser origin: the key decides
    status, _ = await _ask(
        url, host="abc.trycloudflare.com", headers={"Origin": "https://x.example"}
    )
    assert status == 401
    listed = {**keyed, "allowed_hosts": ["abc.trycloudflare.com"]}
    url = await stack.router(preferring_a(sim_url, server=listed), environ=environ)
    status, _ = await _ask(url, host="abc.trycloudflare.com", headers=bearer)
    assert status == 200
    status, body = await _ask(url, host="evil.example", headers=bearer)
    assert (status, body["error"]["code"]) == (403, "host_not_allowed")


async def test_a_body_that_stops_coming_is_cut_when_its_timeout_expires(stack):
    """A head with a Content-Length and then silence: the handler would wait forever."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"body_timeout": 0.3}))
    async with _socket(url) as (reader, writer):
        writer.write(_head(url)[: -len(REQUEST) // 2])
        assert await _closed_by_router(reader) == b""


async def test_a_slow_body_that_keeps_coming_is_served(stack):
    """The body timeout counts from the last byte: a slow upload is not a stalled one."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"body_timeout": 0.3}))
    async with _socket(url) as (reader, writer):
        request = _head(url, "Connection: close\r\n")
        body_at = len(request) - len(REQUEST)
        writer.write(request[:body_at])
        for start in range(body_at, len(request), 8):  # about a second in all
            await asyncio.sleep(0.1)
            writer.write(request[start : start + 8])
        assert (await _closed_by_router(reader)).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("expect", ["", "Expect: 100-continue\r\n"], ids=["plain", "expect"])
async def test_a_body_declared_over_the_limit_is_refused_before_any_of_it_comes(stack, expect):
    """nginx's client_max_body_size: the Content-Length says enough. Neither a wait for
    a body the client will not send (body_timeout is long here) nor a 100 Continue
    that asks for an upload only to refuse it."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(
        preferring_a(sim_url, server={"body_timeout": 60, "max_body_bytes": 2000})
    )
    authority = url.removeprefix("http://")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\n{expect}"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    async with _socket(url) as (reader, writer):
        writer.write(head.encode())
        answer = await _answer(reader)  # within 10 s, or the test fails
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    head, _, rest = answer.partition(b"\r\n\r\n")
    body = json.loads(rest)
    assert body["error"]["code"] == "request_too_large" and "2000" in body["error"]["message"]
    # Refused before its 100 Continue, the client may or may not send the body: what
    # follows is no request, and the answer says the connection closes.
    assert (b"connection: close" in head.lower()) is bool(expect)


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", None), ("/v1/messages", "error")],
    ids=["openai", "anthropic"],
)
async def test_an_expectation_other_than_100_continue_is_a_417_in_the_endpoints_dialect(
    stack, path, shape
):
    """RFC 9110 10.1.1: a 417 for an `Expect` the router does not understand, in the
    JSON its SDK reads, logged as a request; the body is never asked for, so the answer
    says the connection closes."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n"
        "Expect: something-else\r\nContent-Type: application/json\r\n"
        f"anthropic-version: 2023-06-01\r\nContent-Length: {len(REQUEST)}\r\n\r\n"
    )
    with capture_logs() as logs:
        async with _socket(url) as (reader, writer):
            writer.write(head.encode())
            answer = await _answer(reader)
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 417"), answer[:200]
    assert b"connection: close" in head_bytes.lower()
    body = json.loads(rest)
    assert body.get("type") == shape  # Anthropic's envelope: {"type": "error", "error": ...}
    assert body["error"]["type"] == "invalid_request_error"
    assert "100-continue" in body["error"]["message"]
    assert [e["status"] for e in logs if e["event"] == "request"] == [417]
    assert sum(s.requests for s in sim.stats.values()) == 0


@pytest.mark.parametrize(
    ("host", "key", "status", "code"),
    [
        ("evil.example", "router-key-1", 403, "host_not_allowed"),
        (None, "wrong-key", 401, "invalid_api_key"),
        (None, "router-key-1", 200, None),
    ],
    ids=["foreign-host", "wrong-key", "accepted"],
)
async def test_a_100_continue_goes_only_to_a_request_that_will_be_read(
    stack, host, key, status, code
):
    """As nginx checks access before it reads a body: a request from a foreign Host or
    with a wrong key gets its refusal (and `Connection: close`) instead of a 100 Continue
    that asks for an upload only to refuse it; an accepted one gets the 100, then its
    answer once the body came."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    server = {"client_keys": ["${ROUTER_KEY}"], "allowed_hosts": ["router.example"]}
    url = await stack.router(
        preferring_a(sim_url, server=server), environ={"ROUTER_KEY": "router-key-1"}
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host or 'router.example'}\r\n"
        f"Authorization: Bearer {key}\r\nExpect: 100-continue\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(REQUEST)}\r\n\r\n"
    )
    async with _socket(url) as (reader, writer):
        writer.write(head.encode())
        async with asyncio.timeout(10):
            first = await reader.readuntil(b"\r\n\r\n")
        if code is not None:
            assert first.startswith(f"HTTP/1.1 {status} ".encode()), first
            assert b"connection: close" in first.lower()
            length = int(first.lower().partition(b"content-length:")[2].partition(b"\r\n")[0])
            async with asyncio.timeout(10):
                rest = await reader.readexactly(length)
            assert json.loads(rest)["error"]["code"] == code
            return
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(REQUEST)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")


MARKER = "private-value-0123456789"
MALFORMED = {
    "header_too_long": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: "
    + (MARKER * 500).encode()
    + b"\r\n\r\n",
    "url_too_long": b"GET /" + (MARKER * 500).encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "control_byte_in_header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: "
    + MARKER.encode()
    + b"\x01\r\n\r\n",
    "tls_on_the_http_port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
    # aiohttp's message for a bad target is the target itself.
    "credentials_in_a_bad_target": (
        f"GET http://user:{MARKER}@ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_a_request_the_parser_refuses_gets_a_json_400_that_does_not_echo_it(
    stack, name, monkeypatch
):
    """aiohttp's own answer is plain text that quotes the offending bytes, and its log a
    traceback at error level for every such request: a JSON 400 and one info line. The
    connection closes once the client has sent nothing more for a while."""
    monkeypatch.setattr(client_connection, "_LINGER_QUIET", 0.2)
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    with capture_logs() as logs:
        async with _socket(url) as (reader, writer):
            writer.write(MALFORMED[name])
            answer = await _closed_by_router(reader)
    assert b" 400 " in answer.partition(b"\r\n")[0], answer[:200]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "bad_http_request" and error["message"].startswith("malformed")
    assert MARKER.encode() not in answer
    refused = [e for e in logs if e["event"] == "bad_http_request"]
    assert len(refused) == 1 and MARKER not in refused[0]["reason"]


async def test_a_client_uploading_a_body_over_the_limit_reads_the_413(stack):
    """The 413 goes out before the body is read, and the router reads out what the
    client still sends (as nginx's lingering close), so the client, busy uploading,
    reads the answer rather than a reset connection."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_body_bytes": 2000}))
    big = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 8_000_000}]}
    )
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(3):
            response = await http.post(f"{url}/v1/chat/completions", content=big.encode())
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "request_too_large"


async def test_pipelined_after_a_good_request_a_broken_body_gets_its_own_400(stack):
    """Two requests in one write: the first is served, the second, whose chunked
    framing breaks, is answered in its dialect, saying the connection closes."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    broken = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n" % (20, REQUEST[:20])
    async with _socket(url) as (reader, writer):
        writer.write(_head(url) + broken)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        writer.write(b"zz\r\n" + REQUEST[20:])
        second = await _closed_by_router(reader)
    assert second.startswith(b"HTTP/1.1 400"), second[:200]
    head, _, body = second.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "invalid_body"


async def test_a_compressed_body_its_answer_left_unread_is_dropped_raw(stack, caplog):
    """A handler that answers without reading (here a 404) a body marked gzip: the rest
    is counted and dropped, not inflated (gzip that is not is never even found out), the
    answer says the connection closes, and it closes once the body's length has come,
    with nothing logged at error level."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    head = (
        f"POST /v1/nothing-here HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n"
        "Content-Encoding: gzip\r\nContent-Length: 7\r\n\r\n"
    )
    with capture_logs() as logs:
        async with _socket(url) as (reader, writer):
            writer.write(head.encode())
            answer = await _answer(reader)
            assert answer.startswith(b"HTTP/1.1 404")
            assert b"connection: close" in answer.lower()
            writer.write(b"notgzip")
            assert await _closed_by_router(reader) == b""
    assert not [e for e in logs if e["event"] == "bad_request_body"]  # never inflated
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v1/chat/completions"])
async def test_a_gzip_bomb_its_answer_left_unread_is_not_inflated(stack, monkeypatch, path):
    """About 64 KB of gzip that inflates to 64 MiB, behind a 404 (never read) or a 413
    (read up to max_body_bytes): aiohttp, reading out what the handler left, inflated
    all of it on the event loop (a megabyte of gzip held the loop for seconds). Only
    what the handler read, and the parser's first step, is inflated now."""
    inflated: list[int] = []
    decompress = ZLibDecompressor.decompress_sync

    def counted(self: ZLibDecompressor, data: bytes, max_length: int = 0) -> bytes:
        out = decompress(self, data, max_length)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(ZLibDecompressor, "decompress_sync", counted)
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_body_bytes": 1_000_000}))
    bomb = gzip.compress(b'{"model":"gpt-4o","x":"' + b"a" * (64 << 20) + b'"}', 9)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(bomb)}\r\n\r\n"
    )
    async with _socket(url) as (reader, writer):
        writer.write(head.encode() + bomb)
        answer = await _answer(reader)
        assert answer.startswith((b"HTTP/1.1 404", b"HTTP/1.1 413")), answer[:100]
        assert await _closed_by_router(reader) == b""
    assert sum(inflated) < 8 << 20, sum(inflated)  # of 64 MiB


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One answer on a keep-alive connection: its head and its Content-Length body."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)


async def _split(writer: asyncio.StreamWriter, request: bytes) -> None:
    """`request`'s head, then its body in a write of its own, as httpx-based SDKs send."""
    body_at = len(request) - len(REQUEST)
    writer.write(request[:body_at])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(request[body_at:])


async def test_bodies_sent_apart_from_their_heads_are_timed_on_a_kept_connection(stack):
    """Each body is timed on its own: a deadline that passes while the connection is
    idle leaves it open, and a later body that stops coming is still cut."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(
        preferring_a(sim_url, server={"body_timeout": 0.3, "idle_timeout": 60})
    )
    async with _socket(url) as (reader, writer):
        await _split(writer, _head(url))
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.5)  # the first body's deadline passes while idle
        writer.write(_head(url))
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        await _split(writer, _head(url))  # a timer for this body, pending after it
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        writer.write(_head(url)[: -len(REQUEST) // 2])  # and a body that stops coming
        assert await _closed_by_router(reader) == b""


async def test_at_the_cap_a_connection_in_use_outlasts_idle_ones_opened_after_it(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_connections": 3}))
    async with contextlib.AsyncExitStack() as sockets:
        first = await sockets.enter_async_context(_socket(url))
        reader, writer = await sockets.enter_async_context(_socket(url))
        second = await sockets.enter_async_context(_socket(url))
        writer.write(_head(url))
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readuntil(b"Hello from a via gpt-4o.")
        # Two new idle sockets at a cap of 3: they displace the two idle ones, oldest
        # first, not the connection that has just carried a request.
        for _ in range(2):
            await sockets.enter_async_context(_socket(url))
        for idle_reader, _writer in (first, second):
            assert await _closed_by_router(idle_reader) == b""
        writer.write(_head(url, "Connection: close\r\n"))
        assert b"HTTP/1.1 200" in await _closed_by_router(reader)


async def test_an_open_bind_without_allowed_hosts_says_which_hosts_it_answers(stack):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    text = preferring_a(sim_url, server={"host": "0.0.0.0", "allow_unauthenticated": True})
    config = parse_config(text, source="routes.yaml", environ={})
    with capture_logs() as logs:
        runner = await start(config, "127.0.0.1", 0)  # a --host flag: loopback after all
        await runner.cleanup()
    assert not [entry for entry in logs if entry["event"] == "only_loopback_hosts_answered"]
    with capture_logs() as logs:
        runner = await start(config, "0.0.0.0", 0)
        await runner.cleanup()
    assert [entry for entry in logs if entry["event"] == "only_loopback_hosts_answered"]


async def test_requests_pipelined_after_bodies_sent_apart_from_their_heads_are_all_served(stack):
    """aiohttp's parser counted each request whose body came after its handler took it
    as still queued, for good: after three, 31 of 40 pipelined requests were answered and
    the rest waited forever."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    async with _socket(url) as (reader, writer):
        for _ in range(3):
            await _split(writer, _head(url))
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        writer.write(_head(url) * 40)
        answers = [await _answer(reader) for _ in range(40)]
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)


async def test_requests_pipelined_in_the_read_that_ends_a_body_sent_apart_are_all_served(stack):
    """A body sent after its head, with 40 requests pipelined in the same write: the
    parser stopped at its count of 32 before the body's slot was freed, and nothing
    had it parse the rest."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    request = _head(url)
    async with _socket(url) as (reader, writer):
        writer.write(request[: -len(REQUEST)])
        await writer.drain()
        await asyncio.sleep(0.05)  # its handler has taken it
        writer.write(REQUEST + request * 40)
        answers = [await _answer(reader) for _ in range(41)]
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
