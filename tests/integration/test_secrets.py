"""No secret leaves where it belongs: not in any log line (the router's or a library's),
not in an error body or error event the client gets, escaped or cut short."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from router.telemetry.logs import configure_logging, reset_logging
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, REPO, SIM_A, raw_upstream
from tests.integration.test_cli import ENV
from tests.integration.test_logs import StderrLike

CLIENT_KEY = "router-client-key-0123456789"
# An Azure-style key: 32 hex digits, no prefix, so only its exact value can be matched.
AZURE_KEY = "0f3a9c5e7b1d4f2a8c6e0b9d3f5a7c1e"


@asynccontextmanager
async def router_process(
    config: Path, env: dict[str, str], *extra: str
) -> AsyncIterator[tuple[str, list[str]]]:
    """`llm-router serve` as a child process: (its base URL, every line it wrote to
    stdout and stderr, complete once the block is left and the process has stopped)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**ENV, **env}, cwd=REPO,
    )  # fmt: skip
    assert process.stderr is not None and process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, f"router exited before listening: {lines}"
                lines.append(line)
                if '"listening"' in line:
                    break
        url = json.loads(lines[-1])["url"].removesuffix("/v1")
        yield url, lines
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await process.communicate()
        lines.extend((err + out).decode().splitlines(keepends=True))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def raw_request(url: str, request: bytes) -> bytes:
    """`request` written as is on a new connection; everything the router answers."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def _config(tmp_path: Path, sim_url: str) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        routes_yaml(
            keys=[key("a", sim_url, api_key="${SIM_KEY}")],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
            server={"client_keys": ["${ROUTER_KEY}"]},
        )
    )
    return config


async def test_aiohttps_bad_request_line_is_json_and_redacted_like_the_routers_own(stack, tmp_path):
    _sim, sim_url = await stack.sim(SIM_A)
    env = {"SIM_KEY": SIM_A.api_key, "ROUTER_KEY": CLIENT_KEY}
    async with router_process(_config(tmp_path, sim_url), env) as (url, lines):
        # A control byte in a header value: aiohttp's parser refuses the request and its
        # own logger quotes the raw header line, which here holds the client's key.
        answer = await raw_request(
            url,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {CLIENT_KEY}\x01\r\n".encode()
            + f"x-api-key: {CLIENT_KEY}\x02\r\n".encode()
            + b"Content-Length: 2\r\n\r\n{}",
        )
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    # The answer is JSON and does not echo the request's bytes (the key in them).
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "bad_http_request" and error["message"].startswith("malformed")
    assert CLIENT_KEY.encode() not in answer
    text = "".join(lines)
    assert CLIENT_KEY not in text and SIM_A.api_key not in text
    events = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    # One line at info, as nginx logs a client's bad request: no traceback at error.
    (bad,) = [e for e in events if e.get("event") == "bad_http_request"]
    assert bad["level"] == "info" and bad["reason"] and "exception" not in bad
    assert not [e for e in events if e.get("logger") == "aiohttp.server"]


# -- What an upstream echoes -------------------------------------------------------------


def escaped(text: str) -> str:
    """`text` with every character as a JSON `\\uXXXX` escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def leaks(text: str, secret: str, window: int = 8) -> bool:
    """Whether any `window` characters of `secret` appear in `text`, as written or with
    its JSON escapes decoded: a key cut short or escaped still counts."""
    forms = [text, text.encode("latin-1", "replace").decode("unicode_escape", "replace")]
    parts = {secret[i : i + window] for i in range(len(secret) - window + 1)}
    return any(part in form for form in forms for part in parts)


@pytest.fixture
def log_text() -> Iterator[StderrLike]:
    """The router's log, as `serve` configures it (the config's keys as secrets), on a
    stream like stderr."""
    stream = StderrLike()
    configure_logging(secrets=[AZURE_KEY, CLIENT_KEY], stream=stream, cache_loggers=False)
    try:
        yield stream
    finally:
        reset_logging()


def _sent_key(request: web.Request) -> str:
    bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return request.headers.get("x-api-key", bearer)  # Anthropic's header, or OpenAI's


# One upstream answer per way of echoing the key. Each is an error the router passes to
# the client (a request error, in a body or a stream's first event; auth errors fail
# over) or logs (a 500 it fails over from).
def _plain_400(sent: str) -> web.StreamResponse:
    body = {"error": {"message": f"Incorrect API key provided: {sent}.", "type": "x"}}
    return web.json_response(body, status=400)


def _escaped_400(sent: str) -> web.StreamResponse:
    message = f"near {escaped(sent)}"
    text = '{"error": {"message": "' + message + '", "type": "invalid_request_error"}}'
    return web.Response(body=text.encode(), status=400, content_type="application/json")


def _long_500(sent: str) -> web.StreamResponse:
    # Not JSON, the key straddling the 200th and 300th characters where messages are cut.
    return web.Response(body=("x" * 185 + sent + " " + "y" * 70 + sent).encode(), status=500)


def _long_json_500(sent: str) -> web.StreamResponse:
    body = {"error": {"message": "z" * 180 + sent + "z" * 80 + sent, "type": "server_error"}}
    return web.json_response(body, status=500)


async def _stream_error_event(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    message = f"unsupported value near {_sent_key(request)}"
    error = {"error": {"message": message, "type": "invalid_request_error"}}
    await response.write(f"data: {json.dumps(error)}\n\n".encode())
    return response


async def _stream_escaped_error_event(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    message = escaped(_sent_key(request)).encode()
    event = b'data: {"error": {"message": "near %s", "type": "invalid_request_error"}}\n\n'
    await response.write(event % message)
    return response


def _content_chunk(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(delta)}\n\n".encode()


async def _mid_stream_error(request: web.Request, *, escape: bool) -> web.StreamResponse:
    """Content first (the client's response is committed), then an error event that
    echoes the key, written in two pieces that split the key."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_content_chunk("Hello"))
    sent = _sent_key(request)
    shown = escaped(sent) if escape else sent
    # Quota: the key is disabled and the log quotes the message, cut at 300 characters.
    event = (
        b'data: {"error": {"message": "%s key %s revoked", "type": "insufficient_quota",'
        b' "code": "insufficient_quota"}}\n\n'
    ) % (b"z" * 280, shown.encode())
    half = event.index(shown.encode()) + len(shown) // 2
    await response.write(event[:half])
    await asyncio.sleep(0.05)  # two reads for the router, not one
    await response.write(event[half:])
    return response


# A model's own example beside the echoed key: it must come through untouched.
EXAMPLE = 'curl -H "Authorization: Bearer YOUR_KEY" -d sk-proj-abcdefghijklmnop'


def _ok_chat(sent: str) -> web.StreamResponse:
    """A completion that went well and echoes the key in its text (a debug server)."""
    message = {"role": "assistant", "content": f"your key is {sent}; {EXAMPLE}"}
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [choice], "usage": usage}  # fmt: skip
    return web.json_response(body)


def _ok_messages(sent: str) -> web.StreamResponse:
    """Anthropic's answer that went well, echoing the key in its text."""
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": f"your key is {sent}; {EXAMPLE}"}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 4}}  # fmt: skip
    return web.json_response(body)


def _answering(make: Callable[[str], web.StreamResponse]) -> Callable[..., Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return make(_sent_key(request))

    return handler


ECHOES = {
    # (the upstream's handler, stream or not, the key's provider)
    "plain_400": (_answering(_plain_400), False, "openai"),
    "escaped_request_error": (_answering(_escaped_400), False, "openai"),
    "long_text_500": (_answering(_long_500), False, "openai"),
    "long_json_500": (_answering(_long_json_500), False, "openai"),
    "stream_first_event_request_error": (_stream_error_event, True, "openai"),
    "stream_first_event_escaped_request_error": (_stream_escaped_error_event, True, "openai"),
    "mid_stream_error_event": (functools.partial(_mid_stream_error, escape=False), True, "openai"),
    "mid_stream_escaped": (functools.partial(_mid_stream_error, escape=True), True, "openai"),
    # Through litellm (an Anthropic key answering OpenAI chat), whose messages are cut.
    "translated_long_text_500": (_answering(_long_500), False, "anthropic"),
    "translated_long_json_500": (_answering(_long_json_500), False, "anthropic"),
    "translated_stream_long_500": (_answering(_long_500), True, "anthropic"),
    # Answers that went well, the key in the model's text.
    "ok_answer": (_answering(_ok_chat), False, "openai"),
    "translated_ok_answer": (_answering(_ok_messages), False, "anthropic"),
}
# Where each provider's API base points and the path the upstream answers.
UPSTREAM = {"openai": ("/v1", "/v1/chat/completions"), "anthropic": ("", "/v1/messages")}


@pytest.mark.parametrize("echo", list(ECHOES))
async def test_a_key_the_upstream_echoes_reaches_neither_client_nor_log(stack, log_text, echo):
    handler, stream, provider = ECHOES[echo]
    base, path = UPSTREAM[provider]
    async with raw_upstream(path, handler) as upstream_url:
        config = routes_yaml(
            keys=[key("azure", upstream_url + base, api_key=AZURE_KEY, provider=provider)],
            models={"gpt-4o": model(route("azure", "gpt-4o"))},
        )
        url = await stack.router(config)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": HI, "stream": stream},
            ) as response,
        ):
            seen = (await response.read()).decode()
            status = response.status
        await stack.close()  # every log line of the request is written
    assert status >= 400 or "mid_stream" in echo or "ok_answer" in echo, seen
    if "ok_answer" in echo:  # served, the key's place in the text redacted, no more
        assert status == 200, seen
        content = json.loads(seen)["choices"][0]["message"]["content"]
        assert content == f"your key is [redacted]; {EXAMPLE}"
    if "mid_stream" in echo:  # the content, then the provider's event, redacted
        assert "Hello" in seen and "key [redacted] revoked" in seen
        assert "key_disabled" in log_text.getvalue()
    if "request_error" in echo:
        assert status == 400 and "near [redacted]" in seen  # the upstream's own error
    assert not leaks(seen, AZURE_KEY), seen
    assert not leaks(log_text.getvalue(), AZURE_KEY), log_text.getvalue()
    assert "[redacted]" in seen + log_text.getvalue()  # it was there to be redacted


# -- Who may read /metrics and /admin ------------------------------------------------------

ADMIN_KEY = "router-admin-key-9876543210"
OPERATOR_PAGES = ("/metrics", "/admin", "/status", "/admin/routes")


async def _status(url: str, path: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=headers) as r:
        await r.read()
        return r.status


def _keyed_config(sim_url: str, **server: object) -> str:
    return routes_yaml(
        keys=[key("a", f"{sim_url}", api_key=SIM_A.api_key)],
        models={"gpt-4o": model(route("a", "gpt-4o"))},
        server={"client_keys": [CLIENT_KEY], **server},
    )


async def test_admin_keys_guard_metrics_and_admin_and_nothing_else_opens_them(stack):
    _sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(_keyed_config(sim_url, admin_keys=[ADMIN_KEY]))
    for probe in ("/healthz", "/readyz"):  # probes stay open
        assert await _status(url, probe) == 200
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()
    for page in OPERATOR_PAGES:
        assert await _status(url, page) == 401
        assert await _status(url, page, {"Authorization": f"Bearer {CLIENT_KEY}"}) == 401
        assert await _status(url, page, {"Authorization": f"Bearer {ADMIN_KEY}"}) == 200
        assert await _status(url, page, {"x-api-key": ADMIN_KEY}) == 200
        assert await _status(url, page, {"Authorization": basic}) == 200  # a browser
    # An admin key is not a client key: it reads the router, it does not spend its keys.
    as_admin = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await as_admin.chat.completions.create(model="gpt-4o", messages=HI)
    as_client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0)
    answer = await as_client.chat.completions.create(model="gpt-4o", messages=HI)
    assert answer.choices[0].message.content


async def test_without_admin_keys_the_admin_pages_need_a_client_key_and_metrics_stay_open(stack):
    _sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(_keyed_config(sim_url))
    assert await _status(url, "/metrics") == 200  # scrapers as deploy/ configures them
    for page in OPERATOR_PAGES[1:]:
        assert await _status(url, page) == 401
        assert await _status(url, page, {"Authorization": f"Bearer {CLIENT_KEY}"}) == 200


async def test_a_saved_browser_password_opens_the_pages_but_spends_nothing(stack):
    """A browser that saved the password of /admin sends it again by itself, also on a
    form another site posts to the router (`enctype=text/plain` needs no preflight).
    HTTP Basic is taken for reading only: the pages open, a cross-site form that would
    spend the keys or reload the config gets a 401."""
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(_keyed_config(sim_url, admin_keys=[ADMIN_KEY]))
    as_client = "Basic " + base64.b64encode(f"x:{CLIENT_KEY}".encode()).decode()
    as_admin = "Basic " + base64.b64encode(f"x:{ADMIN_KEY}".encode()).decode()
    form = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"x":"="}'
    async with aiohttp.ClientSession() as session:
        for path, secret in (("/v1/chat/completions", as_client), ("/admin/reload", as_admin)):
            headers = {**form, "Authorization": secret}
            async with session.post(url + path, data=body, headers=headers) as response:
                assert response.status == 401, path
                assert (await response.json())["error"]["code"] == "invalid_api_key"
    assert sim.stats["a"].requests == 0
    assert await _status(url, "/admin", {"Authorization": as_admin}) == 200


async def test_key_header_bytes_that_are_not_utf8_get_a_401_not_a_500(stack):
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(_keyed_config(sim_url))
    host, port = url.removeprefix("http://").split(":")
    for header in (b"Authorization: Bearer \xff\xfe", b"x-api-key: \xff\xfe"):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"GET /v1/models HTTP/1.1\r\nHost: " + url.removeprefix("http://").encode()
                + b"\r\n" + header + b"\r\nConnection: close\r\n\r\n"
            )  # fmt: skip
            async with asyncio.timeout(10):
                answer = await reader.read()
        finally:
            writer.close()
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), answer[:200]
        assert json.loads(rest)["error"]["code"] == "invalid_api_key"
    assert sim.stats["a"].requests == 0
