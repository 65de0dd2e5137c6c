"""Translation through litellm, against the simulator's real wire formats on 127.0.0.1.

Each test calls `translator_for(...).send(...)` with a `Route` built from `router.types`
and reads the answer the way failover does (`status`, `headers`, `read`, `next_chunk`,
`finish`). Where a real client can judge the bytes best, a small bridge serves the
translated answer over HTTP to the official `openai` and `anthropic` SDKs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from router.errors import UpstreamConnectionError, UpstreamProtocolError, UpstreamTimeout
from router.outcomes import FailureClass
from router.rules.failures import classify_response
from router.sim import Fault, SimKey, SimProvider
from router.types import Key, Operation, Route
from router.upstream.providers import PROVIDERS as PROVIDERS_BY_NAME
from router.upstream.translate import (
    TranslatedResponse,
    egress,
    litellm_providers,
    runtime,
    translator_for,
)
from router.upstream.translate.endpoints import litellm_api_base, litellm_model
from router.upstream.translate.litellm_errors import error_answer
from tests.conftest import Stack

pytestmark = pytest.mark.timeout(60)  # the first test pays for importing litellm (~3 s)

KEY = "sk-sim-translate"
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.0-flash"
GPT = "gpt-4o-mini"
API_VERSION = "2024-10-21"
CHAT = {"model": "client-name", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "client-name",
    "max_tokens": 64,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "hi"}],
}
HEAD = 10.0
_JSON = "application/json"


def reply(model: str) -> str:
    return f"Hello from a via {model}."


@pytest.fixture(autouse=True)
async def close_key_clients() -> AsyncIterator[None]:
    """These tests send without a router, so nothing shuts down what they opened: close
    the keys' own litellm clients (egress.py) on the test's loop, as a router's shutdown
    would."""
    yield
    await egress.close()


@pytest.fixture
async def sim(stack: Stack) -> SimProvider:
    provider, _ = await stack.sim(SimKey(name="a", api_key=KEY))
    return provider


def route_to(sim: SimProvider, provider: str, model: str) -> Route:
    """A route in our config's conventions: Anthropic and Gemini bases are the host only."""
    api_base = f"{sim.root}/v1" if provider == "openai" else sim.root
    version = API_VERSION if provider == "azure" else None
    key = Key(name="a", provider=provider, api_base=api_base, api_key=KEY, api_version=version)
    return Route(key=key, model=model)


async def send(
    route: Route, operation: Operation, payload: dict[str, Any], *, stream: bool
) -> TranslatedResponse:
    translator = translator_for(route.key.provider, operation)
    assert translator is not None
    return await translator.send(route, operation, payload, stream=stream, head_timeout=HEAD)


async def chunks_of(response: TranslatedResponse) -> list[bytes]:
    chunks = []
    try:
        while chunk := await response.next_chunk(5.0):
            chunks.append(chunk)
    finally:
        response.finish()
    return chunks


def data_lines(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]


def anthropic_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


# -- CHAT (OpenAI chat completions) onto Anthropic and Gemini ---------------------------

PROVIDERS = [
    pytest.param("anthropic", CLAUDE, "/v1/messages", "/v1/messages", id="anthropic"),
    pytest.param(
        "gemini",
        GEMINI,
        f"/v1beta/models/{GEMINI}:generateContent",
        f"/v1beta/models/{GEMINI}:streamGenerateContent",
        id="gemini",
    ),
]
KEY_HEADER = {"anthropic": "x-api-key", "gemini": "x-goog-api-key"}


@pytest.mark.parametrize(("provider", "model", "path", "stream_path"), PROVIDERS)
async def test_chat_is_answered_with_an_openai_completion_and_its_usage(
    sim: SimProvider, provider: str, model: str, path: str, stream_path: str
) -> None:
    response = await send(route_to(sim, provider, model), Operation.CHAT, CHAT, stream=False)

    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    completion = openai.types.chat.ChatCompletion.model_validate_json(await response.read(5.0))
    assert completion.choices[0].message.content == reply(model)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.completion_tokens > 0
    recorded = sim.requests[-1]
    assert recorded.path == path
    assert recorded.headers[KEY_HEADER[provider]] == KEY


@pytest.mark.parametrize(("provider", "model", "path", "stream_path"), PROVIDERS)
async def test_chat_stream_is_openai_chunks_then_usage_then_done(
    sim: SimProvider, provider: str, model: str, path: str, stream_path: str
) -> None:
    response = await send(route_to(sim, provider, model), Operation.CHAT, CHAT, stream=True)

    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    data = data_lines(b"".join(await chunks_of(response)))
    assert data[-1] == "[DONE]"
    chunks = [openai.types.chat.ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply(model)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 7
    recorded = sim.requests[-1]
    assert recorded.path == stream_path
    assert recorded.headers[KEY_HEADER[provider]] == KEY
    assert recorded.query == ("alt=sse" if provider == "gemini" else "")
    assert sim.stats["a"].streams_completed == 1
    assert sim.stats["a"].cancelled == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_translated_success_keeps_the_providers_rate_limit_headers(
    stack: Stack, stream: bool
) -> None:
    sim, _ = await stack.sim(SimKey(name="a", api_key=KEY, rpm=60, tpm=100_000))

    response = await send(route_to(sim, "anthropic", CLAUDE), Operation.CHAT, CHAT, stream=stream)
    await chunks_of(response)

    headroom = PROVIDERS_BY_NAME["anthropic"].headroom(response.headers)
    assert headroom is not None
    assert headroom.limit_requests == 60
    assert headroom.remaining_requests == 59


async def test_a_request_body_cannot_redirect_the_call_or_swap_the_key(sim: SimProvider) -> None:
    payload = {**CHAT, "api_base": "http://127.0.0.1:1", "api_key": "sk-someone-else"}

    response = await send(route_to(sim, "anthropic", CLAUDE), Operation.CHAT, payload, stream=False)

    assert response.status == 200
    assert sim.requests[-1].headers["x-api-key"] == KEY


async def test_malformed_messages_are_the_callers_fault_not_a_failover(sim: SimProvider) -> None:
    payload = {**CHAT, "messages": "hi"}

    response = await send(route_to(sim, "anthropic", CLAUDE), Operation.CHAT, payload, stream=False)

    assert response.status == 400
    verdict = classify_response(response.status, response.headers, await response.read(1.0))
    assert verdict.failure is FailureClass.BAD_REQUEST
    assert sim.stats["a"].requests == 0


# -- MESSAGES (Anthropic Messages) onto OpenAI and Azure --------------------------------

OPENAI_FORMATS = [
    pytest.param("openai", "/v1/chat/completions", id="openai"),
    pytest.param("azure", f"/openai/deployments/{GPT}/chat/completions", id="azure"),
]


@pytest.mark.parametrize(("provider", "path"), OPENAI_FORMATS)
async def test_messages_are_answered_with_an_anthropic_message(
    sim: SimProvider, provider: str, path: str
) -> None:
    response = await send(route_to(sim, provider, GPT), Operation.MESSAGES, MESSAGES, stream=False)

    assert response.status == 200
    message = anthropic.types.Message.model_validate_json(await response.read(5.0))
    assert message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == reply(GPT)  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    recorded = sim.requests[-1]
    assert recorded.path == path
    sent = json.loads(recorded.body)
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 64


@pytest.mark.parametrize(("provider", "path"), OPENAI_FORMATS)
async def test_messages_stream_is_anthropic_events_in_order(
    sim: SimProvider, provider: str, path: str
) -> None:
    response = await send(route_to(sim, provider, GPT), Operation.MESSAGES, MESSAGES, stream=True)

    assert response.headers["content-type"] == "text/event-stream"
    events = anthropic_events(b"".join(await chunks_of(response)))
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(delta["type"] == "text_delta" for delta in deltas)
    assert "".join(delta["text"] for delta in deltas) == reply(GPT)
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"]["output_tokens"] > 0
    assert sim.requests[-1].path == path


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


async def test_tools_are_translated_into_each_providers_request_format(sim: SimProvider) -> None:
    openai_tool = {
        "type": "function",
        "function": {"name": "weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
    }
    anthropic_tool = {"name": "weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}

    # litellm 1.106 fails any request with tools unless told to skip its MCP gateway.
    chat = await send(
        route_to(sim, "anthropic", CLAUDE),
        Operation.CHAT,
        {**CHAT, "tools": [openai_tool], "stop": ["END"], "max_tokens": 32},
        stream=False,
    )
    to_anthropic = json.loads(sim.requests[-1].body)
    messages = await send(
        route_to(sim, "openai", GPT),
        Operation.MESSAGES,
        {**MESSAGES, "tools": [anthropic_tool], "stop_sequences": ["END"]},
        stream=False,
    )
    to_openai = json.loads(sim.requests[-1].body)

    assert (chat.status, messages.status) == (200, 200)
    assert to_anthropic["tools"][0]["name"] == "weather"
    assert to_anthropic["tools"][0]["input_schema"]["properties"] == WEATHER_SCHEMA["properties"]
    assert to_anthropic["stop_sequences"] == ["END"]
    assert to_anthropic["max_tokens"] == 32
    assert to_openai["tools"][0]["function"]["name"] == "weather"
    assert to_openai["tools"][0]["function"]["parameters"] == WEATHER_SCHEMA
    assert to_openai["stop"] == ["END"]


@asynccontextmanager
async def bridge(route: Route) -> AsyncIterator[str]:
    """Serves a translator's answers over HTTP, as the router's handler would."""

    async def handle(request: web.Request) -> web.StreamResponse:
        operation = Operation.MESSAGES if request.path == "/v1/messages" else Operation.CHAT
        payload = await request.json()
        upstream = await send(route, operation, payload, stream=payload.get("stream") is True)
        try:
            if upstream.headers["content-type"] != "text/event-stream":
                body = await upstream.read(5.0)
                return web.Response(status=upstream.status, body=body, content_type=_JSON)
            answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await answer.prepare(request)
            while chunk := await upstream.next_chunk(5.0):
                await answer.write(chunk)
            await answer.write_eof()
            return answer
        finally:
            upstream.finish()

    app = web.Application()
    app.router.add_post("/v1/messages", handle)
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_anthropic_sdk_reads_translated_messages_and_streams(sim: SimProvider) -> None:
    async with bridge(route_to(sim, "openai", GPT)) as url:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0)
        message = await client.messages.create(**MESSAGES)  # type: ignore[call-overload]
        async with client.messages.stream(**MESSAGES) as stream:  # type: ignore[arg-type]
            text = await stream.get_final_text()
            final = await stream.get_final_message()

    assert message.content[0].text == reply(GPT)  # type: ignore[union-attr]
    assert text == reply(GPT)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


async def test_the_openai_sdk_reads_translated_completions_and_streams(sim: SimProvider) -> None:
    async with bridge(route_to(sim, "gemini", GEMINI)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="client", max_retries=0)
        completion = await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        stream = await client.chat.completions.create(**CHAT, stream=True)  # type: ignore[call-overload]
        chunks = [chunk async for chunk in stream]

    assert completion.choices[0].message.content == reply(GEMINI)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply(GEMINI)
    assert chunks[-1].usage is not None


# -- Errors keep the provider's signals --------------------------------------------------


def gemini_retry_delay(body: bytes) -> float:
    details = json.loads(body)["error"]["details"]
    delay = next(d["retryDelay"] for d in details if d["@type"].endswith("RetryInfo"))
    return float(delay.rstrip("s"))


ERRORS = [
    pytest.param("anthropic", CLAUDE, Fault.rate_limit(retry_after=5), 429,
                 FailureClass.RATE_LIMITED, id="anthropic-429-retry-after"),
    pytest.param("anthropic", CLAUDE, Fault.overloaded(), 529,
                 FailureClass.OVERLOADED, id="anthropic-529-overloaded"),
    pytest.param("anthropic", CLAUDE, Fault.insufficient_quota(), 400,
                 FailureClass.QUOTA, id="anthropic-credit-balance-400"),
    pytest.param("anthropic", CLAUDE, Fault.auth(), 401,
                 FailureClass.AUTH, id="anthropic-auth"),
    pytest.param("anthropic", CLAUDE, Fault.context_length(), 400,
                 FailureClass.CONTEXT_TOO_LONG, id="anthropic-context-length"),
    pytest.param("gemini", GEMINI, Fault.rate_limit(retry_after=7), 429,
                 FailureClass.RATE_LIMITED, id="gemini-per-minute-retry-info"),
    pytest.param("gemini", GEMINI, Fault.insufficient_quota(), 429, FailureClass.QUOTA,
                 id="gemini-per-day-quota"),
    pytest.param("gemini", GEMINI, Fault.auth(), 400,
                 FailureClass.AUTH, id="gemini-api-key-not-valid"),
    pytest.param("gemini", GEMINI, Fault.overloaded(), 503,
                 FailureClass.OVERLOADED, id="gemini-503-overloaded"),
    pytest.param("gemini", GEMINI, Fault.context_length(), 400,
                 FailureClass.CONTEXT_TOO_LONG, id="gemini-context-length"),
]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "model", "fault", "status", "failure"), ERRORS)
async def test_a_provider_error_comes_back_as_the_provider_sent_it(
    sim: SimProvider,
    provider: str,
    model: str,
    fault: Fault,
    status: int,
    failure: FailureClass,
    stream: bool,
) -> None:
    sim.inject("a", fault)

    response = await send(route_to(sim, provider, model), Operation.CHAT, CHAT, stream=stream)
    body = await response.read(5.0)
    response.finish()

    assert response.status == status
    verdict = classify_response(response.status, response.headers, body)
    assert verdict.failure is failure
    if fault.kind == "rate_limit" and provider == "anthropic":
        assert response.headers["retry-after"] == "5"
        assert "anthropic-ratelimit-requests-remaining" in response.headers
        assert verdict.retry_after == 5.0
    if fault.kind == "rate_limit" and provider == "gemini":
        assert verdict.retry_after == gemini_retry_delay(body) == 7.0


async def test_an_openai_rate_limit_keeps_its_headers_for_an_anthropic_client(
    sim: SimProvider,
) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=3))

    response = await send(route_to(sim, "openai", GPT), Operation.MESSAGES, MESSAGES, stream=True)
    body = await response.read(5.0)

    assert response.status == 429
    assert response.headers["retry-after-ms"] == "3000"
    verdict = classify_response(response.status, response.headers, body)
    assert verdict.failure is FailureClass.RATE_LIMITED
    assert verdict.retry_after == 3.0


async def test_an_error_event_before_the_first_chunk_is_an_answer_to_classify(
    sim: SimProvider,
) -> None:
    # Anthropic sends message_start, then `event: error` overloaded (§9.2); litellm keeps
    # only the message, so the answer is synthesised with the same meaning.
    sim.inject("a", Fault.stream_error(after_chunks=0))

    response = await send(route_to(sim, "anthropic", CLAUDE), Operation.CHAT, CHAT, stream=True)
    body = await response.read(5.0)

    assert response.status >= 500
    assert classify_response(response.status, response.headers, body).failure is (
        FailureClass.OVERLOADED
    )


async def test_a_litellm_error_without_the_providers_answer_is_synthesised() -> None:
    lib = await runtime.load()
    exc = lib.ContextWindowExceededError(
        message="prompt is too long", model=CLAUDE, llm_provider="anthropic"
    )

    answer = error_answer(exc, "a/claude")

    body = await answer.read(1.0)
    assert answer.status == 400
    assert json.loads(body)["error"]["code"] == "context_length_exceeded"
    assert classify_response(answer.status, answer.headers, body).failure is (
        FailureClass.CONTEXT_TOO_LONG
    )


# -- Streams that break, stall or are left -----------------------------------------------

STREAMS = [
    pytest.param("anthropic", CLAUDE, Operation.CHAT, CHAT, id="chat-anthropic"),
    pytest.param("gemini", GEMINI, Operation.CHAT, CHAT, id="chat-gemini"),
    pytest.param("openai", GPT, Operation.MESSAGES, MESSAGES, id="messages-openai"),
]


@pytest.mark.parametrize(("provider", "model", "operation", "payload"), STREAMS)
async def test_a_stream_cut_after_two_chunks_raises_a_protocol_error_after_them(
    sim: SimProvider, provider: str, model: str, operation: Operation, payload: dict[str, Any]
) -> None:
    sim.inject("a", Fault.stream_cut(after_chunks=2))
    response = await send(route_to(sim, provider, model), operation, payload, stream=True)
    received = []

    with pytest.raises(UpstreamProtocolError):
        while chunk := await response.next_chunk(5.0):
            received.append(chunk)
    response.finish()

    text = b"".join(received)
    assert b"Hello" in text and b" from" in text
    assert b"[DONE]" not in text and b"message_stop" not in text


@pytest.mark.parametrize(("provider", "model", "operation", "payload"), STREAMS)
async def test_a_stream_that_goes_silent_times_out_in_the_idle_phase(
    sim: SimProvider, provider: str, model: str, operation: Operation, payload: dict[str, Any]
) -> None:
    sim.inject("a", Fault.stream_stall(after_chunks=1))
    response = await send(route_to(sim, provider, model), operation, payload, stream=True)

    with pytest.raises(UpstreamTimeout) as raised:
        while await response.next_chunk(0.5):
            pass
    response.finish()

    assert raised.value.phase == "idle"


@pytest.mark.parametrize(("provider", "model", "operation", "payload"), STREAMS)
async def test_finishing_an_open_stream_cancels_the_provider_request(
    stack: Stack, provider: str, model: str, operation: Operation, payload: dict[str, Any]
) -> None:
    sim, _ = await stack.sim(SimKey(name="a", api_key=KEY, chunk_delay=0.2))
    response = await send(route_to(sim, provider, model), operation, payload, stream=True)
    assert await response.next_chunk(5.0)

    response.finish()

    for _ in range(100):
        if sim.stats["a"].cancelled:
            break
        await asyncio.sleep(0.02)
    assert sim.stats["a"].cancelled == 1
    assert sim.stats["a"].streams_completed == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "model", "operation", "payload"), STREAMS)
async def test_a_silent_provider_times_out_within_the_head_deadline(
    sim: SimProvider,
    provider: str,
    model: str,
    operation: Operation,
    payload: dict[str, Any],
    stream: bool,
) -> None:
    # litellm applies no timeout to a Gemini stream's first read; the head deadline does.
    sim.inject("a", Fault.hang())
    translator = translator_for(provider, operation)
    assert translator is not None
    route = route_to(sim, provider, model)
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(UpstreamTimeout) as raised:
        await translator.send(route, operation, payload, stream=stream, head_timeout=0.5)

    assert raised.value.phase == "first_byte"
    assert loop.time() - started < 2.0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "model", "operation", "payload"), STREAMS)
async def test_a_refused_connection_is_a_connection_error(
    provider: str, model: str, operation: Operation, payload: dict[str, Any], stream: bool
) -> None:
    # litellm calls a refused Anthropic connection an InternalServerError(500).
    base = "http://127.0.0.1:1/v1" if provider == "openai" else "http://127.0.0.1:1"
    route = Route(key=Key(name="a", provider=provider, api_base=base, api_key=KEY), model=model)

    with pytest.raises(UpstreamConnectionError):
        await send(route, operation, payload, stream=stream)


# -- Which translator, where litellm goes, and no litellm on import ----------------------


@pytest.mark.parametrize(
    ("provider", "operation", "translated"),
    [
        pytest.param("openai", Operation.CHAT, False, id="openai-chat-is-native"),
        pytest.param("azure", Operation.CHAT, False, id="azure-chat-is-native"),
        pytest.param("anthropic", Operation.MESSAGES, False, id="anthropic-messages-is-native"),
        pytest.param("anthropic", Operation.CHAT, True, id="anthropic-chat"),
        pytest.param("gemini", Operation.CHAT, True, id="gemini-chat"),
        pytest.param("mistral", Operation.CHAT, True, id="mistral-chat"),
        pytest.param("openai", Operation.MESSAGES, True, id="openai-messages"),
        pytest.param("azure", Operation.MESSAGES, True, id="azure-messages"),
        pytest.param("gemini", Operation.EMBEDDINGS, False, id="embeddings-never"),
        pytest.param("anthropic", Operation.RESPONSES, False, id="responses-never"),
        pytest.param("no-such-provider", Operation.CHAT, False, id="unknown-provider"),
    ],
)
def test_translator_for_picks_translation_only_across_formats(
    provider: str, operation: Operation, translated: bool
) -> None:
    assert (translator_for(provider, operation) is not None) is translated


def test_litellm_providers_are_read_from_the_package_files() -> None:
    names = litellm_providers()

    assert {"anthropic", "gemini", "openrouter", "bedrock", "mistral", "groq"} <= names
    assert "vertex_ai-language-models" not in names


@pytest.mark.parametrize(
    ("provider", "api_base", "expected"),
    [
        pytest.param("anthropic", "https://api.anthropic.com", "https://api.anthropic.com",
                     id="anthropic-host-as-is"),
        pytest.param("gemini", "http://127.0.0.1:9", "http://127.0.0.1:9/v1beta",
                     id="gemini-host-gets-version"),
        pytest.param("gemini", "", "https://generativelanguage.googleapis.com/v1beta",
                     id="gemini-default"),
        pytest.param("gemini", "https://gw.example/v1alpha/", "https://gw.example/v1alpha",
                     id="gemini-path-as-is"),
        pytest.param("mistral", "", None, id="empty-is-litellms-default"),
    ],
)  # fmt: skip
def test_api_bases_follow_litellms_conventions(
    provider: str, api_base: str, expected: str | None
) -> None:
    assert litellm_api_base(provider, api_base) == expected


def test_route_models_get_the_provider_prefix_once() -> None:
    assert litellm_model("gemini", GEMINI) == f"gemini/{GEMINI}"
    assert litellm_model("openrouter", "anthropic/claude") == "openrouter/anthropic/claude"
    assert litellm_model("groq", "groq/llama-3") == "groq/llama-3"


def test_importing_the_package_does_not_import_litellm() -> None:
    code = (
        "import sys, router.upstream.translate as t\n"
        "from router.types import Operation\n"
        "t.litellm_providers(); t.translator_for('gemini', Operation.CHAT)\n"
        "print('litellm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        pytest.param({"messages": [{"role": "user", "content": 5}]}, "messages", id="content"),
        pytest.param({"messages": [{"content": "hi"}]}, "messages", id="no-role"),
        pytest.param({"max_tokens": "five"}, "max_tokens", id="max-tokens"),
        pytest.param({"temperature": "hot"}, "temperature", id="temperature"),
        pytest.param({"stop": [1, 2]}, "stop", id="stop"),
        pytest.param({"tools": "all"}, "tools", id="tools"),
    ],
)
async def test_a_chat_body_litellm_cannot_convert_is_the_callers_400(
    sim: SimProvider, change: dict[str, Any], param: str
) -> None:
    """litellm raises its own APIConnectionError on such a body ("'int' object is not
    iterable"): a 500 the route was charged with, five of which opened its circuit."""
    response = await send(
        route_to(sim, "anthropic", CLAUDE), Operation.CHAT, {**CHAT, **change}, stream=False
    )
    assert response.status == 400
    body = json.loads(await response.read(1.0))
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    verdict = classify_response(response.status, response.headers, json.dumps(body).encode())
    assert verdict.failure is FailureClass.BAD_REQUEST
    assert sim.stats["a"].requests == 0


async def test_litellm_fetches_nothing_of_its_own_for_a_translated_request(
    sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm reads its Anthropic beta-header table from GitHub (a blocking httpx.get,
    5 s timeout, on the loop's thread pool) on the first request that needs it, such as
    one with a response_format: the router has it use its bundled copy."""
    from router.upstream.translate import runtime

    await runtime.load()  # the router imports litellm first, as it does in production
    from litellm import anthropic_beta_headers_manager as betas

    fetched: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(betas.GetAnthropicBetaHeadersConfig, "fetch_remote_beta_headers_config",
                        staticmethod(fetch))  # fmt: skip
    monkeypatch.setattr(betas, "_BETA_HEADERS_CONFIG", None)  # as in a new process
    schema = {"name": "x", "schema": {"type": "object"}}
    payload = {**CHAT, "response_format": {"type": "json_schema", "json_schema": schema}}
    route = route_to(sim, "anthropic", CLAUDE)
    beta = {"anthropic-beta": "context-1m-2025-08-07"}  # a key's beta: litellm filters it
    route = dataclasses.replace(route, key=dataclasses.replace(route.key, headers=beta))
    response = await send(route, Operation.CHAT, payload, stream=False)
    assert response.status == 200
    assert betas._BETA_HEADERS_CONFIG is not None  # the table was read: the bundled one
    assert fetched == []
