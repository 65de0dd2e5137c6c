"""What a provider's answer may make the router hold is bounded on the translated path
as on the passthrough (router/upstream/translate/bounded.py): litellm's HTTP clients
read a whole answer, a whole SSE line and a compressed body's whole inflation into
memory. Here the limits are small and the answers well-formed, so that only the bound
can refuse them: before, each was read whole and served.

Both kinds of client litellm sends with: its own (an OpenAI client on an Anthropic key)
and the OpenAI SDK client the router hands it (an Anthropic client on an OpenAI key)."""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from router.telemetry.logs import configure_logging, reset_logging
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, raw_upstream
from tests.integration.test_logs import Captured

pytestmark = pytest.mark.timeout(90)  # the first translated request imports litellm

MIB = 1 << 20
LIMITS = {"max_body_bytes": MIB, "max_event_bytes": MIB}
CLAUDE = "claude-haiku-4-5"


def anthropic_message(text: str) -> bytes:
    return json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 3},
    }).encode()  # fmt: skip


def openai_completion(text: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }).encode()  # fmt: skip


def answering(body: bytes, *, gzipped: bool = False) -> Callable:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        headers = {"Content-Type": "application/json"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=gzip.compress(body) if gzipped else body, headers=headers)

    return handle


def anthropic_stream(text: str) -> Callable:
    """A whole, well-formed Anthropic stream whose one text delta is `text`."""
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": CLAUDE,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": text}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                           "stop_sequence": None}, "usage": {"output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for name, data in events:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return response

    return handle


def on_anthropic_key(upstream: str) -> str:
    return routes_yaml(
        keys=[key("k", upstream, api_key="sk-ant-test-000001", provider="anthropic")],
        models={"chat": model(route("k", CLAUDE))},
        limits=LIMITS,
    )


def on_openai_key(upstream: str) -> str:
    return routes_yaml(
        keys=[key("k", f"{upstream}/v1", api_key="sk-test-000001")],
        models={"chat": model(route("k", "gpt-4o"))},
        limits=LIMITS,
    )


async def post(url: str, path: str, payload: dict) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, json=payload) as response,
    ):
        return response.status, await response.read()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """The router's log, as JSON lines in a buffer."""
    lines = Captured()
    configure_logging(stream=lines.stream, cache_loggers=False)
    try:
        yield lines
    finally:
        reset_logging()


def failover_detail(captured: Captured) -> str:
    """What the failed attempt's `failover` log line says went wrong."""
    (event,) = [e for e in captured.events() if e["event"] == "failover"]
    return event["detail"]


CHAT = {"model": "chat", "messages": HI}
MESSAGES = {"model": "chat", "max_tokens": 16, "messages": HI}


# (text, gzipped, what the failed attempt says): text that compresses about as a real
# answer does, so only the decoded size passes the limit; and text that compresses past
# the inflate ratio (a bomb).
_NOISE = base64.b64encode(random.Random(0).randbytes(3 * MIB)).decode()
TOO_LARGE = [
    pytest.param("x" * (3 * MIB), False, "larger than 1048576 bytes (limits.max_body_bytes)",
                 id="plain"),
    pytest.param(_NOISE, True, "larger than 1048576 bytes (limits.max_body_bytes)", id="gzip"),
    pytest.param("x" * (3 * MIB), True, "inflates more than 200 times its size", id="gzip-bomb"),
]  # fmt: skip


# How each kind of client litellm sends with is reached: the client's path and body,
# the provider's path, its answer's shape, and the config.
LITELLMS_OWN = ("/v1/chat/completions", CHAT, "/v1/messages", anthropic_message, on_anthropic_key)
ROUTERS_OPENAI = (
    "/v1/messages",
    MESSAGES,
    "/v1/chat/completions",
    openai_completion,
    on_openai_key,
)
CLIENTS = [pytest.param(LITELLMS_OWN, id="litellms-own-client"),
           pytest.param(ROUTERS_OPENAI, id="routers-openai-client")]  # fmt: skip


@pytest.mark.parametrize("through", CLIENTS)
@pytest.mark.parametrize(("text", "gzipped", "said"), TOO_LARGE)
async def test_an_answer_too_large_is_refused(stack, captured, through, text, gzipped, said):
    path, payload, upstream_path, answer_of, config = through
    handler = answering(answer_of(text), gzipped=gzipped)
    async with raw_upstream(upstream_path, handler) as upstream:
        url = await stack.router(config(upstream))
        status, answer = await post(url, path, payload)
    assert status >= 500, answer[:300]  # the one route failed: the upstream's fault
    assert said in failover_detail(captured)


@pytest.mark.parametrize("through", CLIENTS)
async def test_a_compressed_answer_within_the_limits_is_served(stack, through):
    """The router inflates it (httpx must not, unbounded): the answer reads as sent."""
    path, payload, upstream_path, answer_of, config = through
    handler = answering(answer_of("Zipped hi."), gzipped=True)
    async with raw_upstream(upstream_path, handler) as upstream:
        url = await stack.router(config(upstream))
        status, answer = await post(url, path, payload)
    assert status == 200, answer[:300]
    assert b"Zipped hi." in answer


async def test_a_stream_line_past_max_event_bytes_ends_the_stream_with_an_error(stack):
    """An SSE line longer than max_event_bytes (a well-formed 2 MiB text delta): the
    stream ends with an error event after what came before it."""
    async with raw_upstream("/v1/messages", anthropic_stream("y" * (2 * MIB))) as upstream:
        url = await stack.router(on_anthropic_key(upstream))
        status, body = await post(url, "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert b'"Hi"' in body  # what came before the long line was relayed
    assert b"limits.max_event_bytes" in body
    assert b"y" * 1000 not in body
    assert b"data: [DONE]" not in body
