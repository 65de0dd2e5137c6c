"""The simulator's other wire formats, each driven by its real client over 127.0.0.1.

Anthropic Messages through the `anthropic` SDK, Azure OpenAI through `AsyncAzureOpenAI`,
OpenAI embeddings and the Responses API through `openai`, and Gemini through raw aiohttp
(no SDK is installed for it). Every format shares one key table, its buckets, its fault
script and its stats, which the last tests check across formats.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from router.sim import Fault, SimKey, SimProvider
from tests.clock import FakeClock

pytestmark = pytest.mark.timeout(20)

KEY = "sk-sim-a"
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.0-flash"
DEPLOYMENT = "chat-prod"
API_VERSION = "2024-10-21"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
# 3 per reply + 3 per message + ceil(len("hi") / 4): the sim's estimate in every format.
PROMPT_TOKENS = 7


def reply(model: str) -> str:
    return f"Hello from a via {model}."


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SimProvider]:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY)], clock=clock)
    async with provider.serve():
        yield provider


@pytest.fixture
async def limited(clock: FakeClock) -> AsyncIterator[SimProvider]:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY, rpm=60, tpm=100_000)], clock=clock)
    async with provider.serve():
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session:
        yield session


def claude(sim: SimProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.root, api_key=KEY, max_retries=0, timeout=5.0)


def azure(sim: SimProvider, api_key: str = KEY) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=sim.root,
        api_key=api_key,
        api_version=API_VERSION,
        max_retries=0,
        timeout=5.0,
    )


def oai(sim: SimProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sim.root}/v1", api_key=KEY, max_retries=0, timeout=5.0)


def named_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """`event: X\\ndata: {...}\\n\\n` blocks, checking the framing and that type == event."""
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == "", "the body must end with a blank line"
    events = []
    for block in blocks[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = event_line.removeprefix("event: "), json.loads(data_line[6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def gemini_events(raw: bytes) -> list[dict[str, Any]]:
    """`data: <json>\\r\\n\\r\\n` events, Google's CRLF framing."""
    blocks = raw.decode().split("\r\n\r\n")
    assert blocks[-1] == ""
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks[:-1])
    return [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]]


async def post_gemini(
    http: aiohttp.ClientSession,
    sim: SimProvider,
    method: str = "generateContent",
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    url = f"{sim.root}/v1beta/models/{GEMINI}:{method}{query}"
    sent = {"x-goog-api-key": KEY} if headers is None else headers
    return await http.post(url, json=GEMINI_BODY, headers=sent)


def rfc3339(value: str) -> datetime:
    assert value.endswith("Z") and len(value) == len("2025-08-21T12:40:59Z"), value
    return datetime.fromisoformat(value)


# --- Anthropic Messages ----------------------------------------------------------------


async def test_root_is_the_served_url_without_v1() -> None:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY)])
    with pytest.raises(RuntimeError):
        _ = provider.root
    async with provider.serve() as base_url:
        assert base_url == f"{provider.root}/v1"
        assert provider.root.startswith("http://127.0.0.1:")


async def test_anthropic_sdk_gets_a_message_and_the_request_is_recorded(
    sim: SimProvider,
) -> None:
    async with claude(sim) as client:
        message = await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)

    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", CLAUDE)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == reply(CLAUDE)  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens == PROMPT_TOKENS
    assert message.usage.output_tokens > 0
    recorded = sim.requests[-1]
    assert (recorded.path, recorded.format, recorded.key_name) == ("/v1/messages", "anthropic", "a")
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.headers["anthropic-version"]
    assert sim.stats["a"].by_format == {"anthropic": 1}


async def test_anthropic_counts_tokens_as_its_messages_report_them(
    limited: SimProvider, http: aiohttp.ClientSession
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=limited.root, api_key=KEY, max_retries=0, timeout=5.0
    ) as client:
        counted = await client.messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    assert counted.input_tokens == PROMPT_TOKENS
    recorded = limited.requests[-1]
    assert (recorded.path, recorded.format) == (
        "/v1/messages/count_tokens",
        "anthropic_count_tokens",
    )
    # Counting has limits of its own: the key's Messages buckets are not drawn on.
    resp = await http.post(
        f"{limited.root}/v1/messages",
        json={"model": CLAUDE, "max_tokens": 8, "messages": MESSAGES},
        headers={"x-api-key": KEY},
    )
    assert resp.headers["anthropic-ratelimit-requests-remaining"] == "59"
    missing = await http.post(
        f"{limited.root}/v1/messages/count_tokens",
        json={"model": CLAUDE},
        headers={"x-api-key": KEY},
    )
    assert missing.status == 400
    assert (await missing.json())["error"]["type"] == "invalid_request_error"


async def test_anthropic_accepts_x_api_key_without_a_version_header(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    body = {"model": CLAUDE, "max_tokens": 16, "messages": MESSAGES, "system": "Be brief."}
    resp = await http.post(f"{sim.root}/v1/messages", json=body, headers={"x-api-key": KEY})
    data = await resp.json()

    assert resp.status == 200
    assert resp.headers["request-id"].startswith("req_")
    assert data["content"] == [{"type": "text", "text": reply(CLAUDE)}]
    # The system prompt counts: 3 for its message overhead + ceil(9 / 4).
    assert data["usage"]["input_tokens"] == PROMPT_TOKENS + 3 + 3
    assert "anthropic-version" not in sim.requests[-1].headers


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"model": CLAUDE, "messages": MESSAGES},
            "max_tokens: Field required",
            id="no-max-tokens",
        ),
        pytest.param(
            {"model": CLAUDE, "max_tokens": 8}, "messages: Field required", id="no-messages"
        ),
        pytest.param(
            {"max_tokens": 8, "messages": MESSAGES}, "model: Field required", id="no-model"
        ),
    ],
)
async def test_anthropic_rejects_bodies_missing_required_fields(
    sim: SimProvider, http: aiohttp.ClientSession, body: dict[str, Any], message: str
) -> None:
    resp = await http.post(f"{sim.root}/v1/messages", json=body, headers={"x-api-key": KEY})
    data = await resp.json()

    assert resp.status == 400
    assert data["type"] == "error"
    assert data["error"] == {"type": "invalid_request_error", "message": message}
    assert data["request_id"] == resp.headers["request-id"]


async def test_anthropic_stream_sends_the_documented_event_sequence(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    body = {"model": CLAUDE, "max_tokens": 64, "messages": MESSAGES, "stream": True}
    resp = await http.post(f"{sim.root}/v1/messages", json=body, headers={"x-api-key": KEY})
    events = named_events(await resp.read())

    assert resp.headers["content-type"] == "text/event-stream"
    names = [name for name, _ in events]
    words = ["Hello", " from", " a", " via", f" {CLAUDE}."]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(words),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == PROMPT_TOKENS
    assert (start["content"], start["stop_reason"]) == ([], None)
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": word} for word in words]
    message_delta = events[-2][1]
    assert message_delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert message_delta["usage"]["output_tokens"] > 0
    assert sim.stats["a"].streams_completed == 1


async def test_anthropic_sdk_streams_with_create_and_with_the_stream_helper(
    sim: SimProvider,
) -> None:
    async with claude(sim) as client:
        stream = await client.messages.create(
            model=CLAUDE, max_tokens=64, messages=MESSAGES, stream=True
        )
        types = [event.type async for event in stream]
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as helper:
            pieces = [text async for text in helper.text_stream]
            final = await helper.get_final_message()

    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "".join(pieces) == reply(CLAUDE)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == PROMPT_TOKENS
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("fault", "exc_type", "status", "type_", "text"),
    [
        pytest.param(
            Fault.rate_limit(retry_after=2),
            anthropic.RateLimitError,
            429,
            "rate_limit_error",
            "would exceed the rate limit",
            id="rate-limit",
        ),
        pytest.param(
            Fault.overloaded(),
            anthropic.InternalServerError,
            529,
            "overloaded_error",
            "Overloaded",
            id="overloaded-529",
        ),
        pytest.param(
            Fault.insufficient_quota(),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
            id="credit-balance-is-a-400",
        ),
        pytest.param(
            Fault.auth(),
            anthropic.AuthenticationError,
            401,
            "authentication_error",
            "invalid x-api-key",
            id="auth",
        ),
        pytest.param(
            Fault.server_error(),
            anthropic.InternalServerError,
            500,
            "api_error",
            "Internal server error",
            id="server-error",
        ),
        pytest.param(
            Fault.context_length(),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "prompt is too long: 208000 tokens > 200000 maximum",
            id="context-length",
        ),
        pytest.param(
            Fault.model_not_found(),
            anthropic.NotFoundError,
            404,
            "not_found_error",
            f"model: {CLAUDE}",
            id="model-not-found",
        ),
        pytest.param(
            Fault.bad_request("messages: roles must alternate"),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "messages: roles must alternate",
            id="bad-request",
        ),
    ],
)
async def test_anthropic_error_fault_reaches_the_sdk_as_the_real_error(
    sim: SimProvider,
    fault: Fault,
    exc_type: type[anthropic.APIStatusError],
    status: int,
    type_: str,
    text: str,
) -> None:
    sim.inject("a", fault)
    async with claude(sim) as client:
        with pytest.raises(exc_type) as raised:
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)

    error = raised.value
    assert error.status_code == status
    assert error.type == type_
    assert error.api_message is not None and text in error.api_message
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert isinstance(error.body, dict) and error.body["request_id"] == error.request_id
    if status == 429:
        assert error.response.headers["retry-after"] == "2"
        assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert sim.stats["a"].rejected == 1


async def test_anthropic_unknown_and_missing_keys_get_authentication_errors(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=sim.root, api_key="sk-wrong", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
    body = {"model": CLAUDE, "max_tokens": 8, "messages": MESSAGES}
    missing = await http.post(f"{sim.root}/v1/messages", json=body)

    assert raised.value.type == "authentication_error"
    assert "sk-wrong" not in str(raised.value.body)
    assert missing.status == 401
    assert (await missing.json())["error"]["message"] == "x-api-key header is required"
    assert sim.stats["a"].requests == 0


async def test_anthropic_ratelimit_headers_count_down_with_rfc3339_resets(
    limited: SimProvider,
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    async with claude(limited) as client:
        first = await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=100, messages=MESSAGES
        )
        second = await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=100, messages=MESSAGES
        )

    h1, h2 = first.headers, second.headers
    for dimension in ("requests", "tokens", "input-tokens", "output-tokens"):
        prefix = f"anthropic-ratelimit-{dimension}"
        assert {f"{prefix}-limit", f"{prefix}-remaining", f"{prefix}-reset"} <= set(h1)
    assert h1["anthropic-ratelimit-requests-limit"] == "60"
    assert (
        h1["anthropic-ratelimit-requests-remaining"],
        h2["anthropic-ratelimit-requests-remaining"],
    ) == ("59", "58")
    spent = int(h1["anthropic-ratelimit-tokens-remaining"]) - int(
        h2["anthropic-ratelimit-tokens-remaining"]
    )
    assert spent == PROMPT_TOKENS + 100  # max_tokens is reserved up front
    # Two requests out of 60 a minute refill in 2 s: the reset is that far in wall time.
    reset = rfc3339(h2["anthropic-ratelimit-requests-reset"])
    assert before + timedelta(seconds=1) <= reset <= before + timedelta(seconds=4)
    assert h1["request-id"] != h2["request-id"]


async def test_anthropic_honest_limit_answers_429_with_retry_after(clock: FakeClock) -> None:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY, rpm=2)], clock=clock)
    async with provider.serve(), claude(provider) as client:
        for _ in range(2):
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
        clock.advance(30)
        await client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)

    headers = raised.value.response.headers
    assert raised.value.type == "rate_limit_error"
    assert "of 2 requests per minute" in (raised.value.api_message or "")
    assert headers["retry-after"] == "30"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert rfc3339(headers["anthropic-ratelimit-requests-reset"]) > datetime.now(UTC)


async def test_anthropic_stream_error_arrives_as_an_error_event_after_text(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    sim.inject("a", Fault.stream_error(after_chunks=1))
    async with claude(sim) as client:
        stream = await client.messages.create(
            model=CLAUDE, max_tokens=64, messages=MESSAGES, stream=True
        )
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as raised:
            async for event in stream:
                seen.append(event.type)

    sim.inject("a", Fault.stream_error(after_chunks=0))
    body = {"model": CLAUDE, "max_tokens": 64, "messages": MESSAGES, "stream": True}
    resp = await http.post(f"{sim.root}/v1/messages", json=body, headers={"x-api-key": KEY})
    events = named_events(await resp.read())

    # The SDK raises with the stream's own status (200) and reads the type from the body.
    assert raised.value.type == "overloaded_error"
    assert seen[-1] == "content_block_delta"
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "error",
    ]
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_anthropic_stream_cut_ends_the_body_without_message_stop(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    sim.inject("a", Fault.stream_cut(after_chunks=1))
    body = {"model": CLAUDE, "max_tokens": 64, "messages": MESSAGES, "stream": True}
    resp = await http.post(f"{sim.root}/v1/messages", json=body, headers={"x-api-key": KEY})
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert sim.stats["a"].dropped == 1


# --- Azure OpenAI --------------------------------------------------------------------------


async def test_azure_sdk_chat_uses_the_deployment_path_and_api_key_header(
    limited: SimProvider,
) -> None:
    async with azure(limited) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=DEPLOYMENT, messages=MESSAGES
        )
        completion = raw.parse()

    assert completion.model == DEPLOYMENT
    assert completion.choices[0].message.content == reply(DEPLOYMENT)
    recorded = limited.requests[-1]
    assert recorded.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert recorded.query == f"api-version={API_VERSION}"
    assert recorded.headers["api-key"] == KEY
    assert "authorization" not in recorded.headers
    assert raw.headers["x-ratelimit-remaining-requests"] == "59"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert "x-ratelimit-limit-requests" not in raw.headers
    assert limited.stats["a"].by_format == {"azure_chat": 1}


async def test_azure_sdk_streams_openai_chunks(sim: SimProvider) -> None:
    async with azure(sim) as client:
        stream = await client.chat.completions.create(
            model=DEPLOYMENT, messages=MESSAGES, stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == reply(DEPLOYMENT)
    assert sim.stats["a"].streams_completed == 1


async def test_azure_sdk_embeddings_decode_from_the_default_base64(sim: SimProvider) -> None:
    async with azure(sim) as client:
        result = await client.embeddings.create(model="embed-prod", input=["one", "two"])

    assert sim.requests[-1].path == "/openai/deployments/embed-prod/embeddings"
    assert json.loads(sim.requests[-1].body)["encoding_format"] == "base64"
    assert result.model == "embed-prod"
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in result.data)
    assert sim.stats["a"].by_format == {"azure_embeddings": 1}


@pytest.mark.parametrize(
    ("fault", "seconds", "retry_after_ms"),
    [
        pytest.param(Fault.rate_limit(retry_after=1.5), 2, "1500", id="rate-limit"),
        pytest.param(Fault.insufficient_quota(), 86400, "86400000", id="quota-86400"),
    ],
)
async def test_azure_429_has_a_string_code_and_the_wait_in_text_and_headers(
    sim: SimProvider, fault: Fault, seconds: int, retry_after_ms: str
) -> None:
    sim.inject("a", fault)
    async with azure(sim) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)

    error = raised.value
    assert error.code == "429"
    assert isinstance(error.body, dict) and set(error.body) == {"code", "message"}
    message = error.body["message"]
    assert message.startswith(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        f"{API_VERSION} have exceeded token rate limit of your current OpenAI S0 pricing tier."
    )
    assert f"Please retry after {seconds} seconds." in message
    assert error.response.headers["retry-after"] == str(seconds)
    assert error.response.headers["retry-after-ms"] == retry_after_ms


async def test_azure_honest_limit_is_a_call_rate_limit_429(clock: FakeClock) -> None:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY, rpm=1)], clock=clock)
    async with provider.serve(), azure(provider) as client:
        await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)

    assert "have exceeded call rate limit" in raised.value.message
    assert "Please retry after 60 seconds." in raised.value.message
    assert raised.value.response.headers["retry-after"] == "60"
    assert raised.value.response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_azure_wants_api_key_header_and_api_version(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.root}/openai/deployments/{DEPLOYMENT}/chat/completions"
    body = {"messages": MESSAGES}
    bearer = await http.post(
        f"{url}?api-version={API_VERSION}", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    no_version = await http.post(url, json=body, headers={"api-key": KEY})

    assert bearer.status == 401
    error = (await bearer.json())["error"]
    assert error["code"] == "401"
    assert error["message"].startswith("Access denied due to invalid subscription key")
    assert no_version.status == 404
    assert await no_version.json() == {"error": {"code": "404", "message": "Resource not found"}}


async def test_azure_missing_deployment_is_deployment_not_found(sim: SimProvider) -> None:
    sim.inject("a", Fault.model_not_found())
    async with azure(sim) as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    assert raised.value.code == "DeploymentNotFound"


# --- OpenAI embeddings -----------------------------------------------------------------------


async def test_embeddings_float_and_base64_carry_the_same_unit_vectors(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    async with oai(sim) as client:
        as_float = await client.embeddings.create(
            model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
        )
        by_default = await client.embeddings.create(
            model="text-embedding-3-small", input=["alpha", "beta"]
        )
    resp = await http.post(
        f"{sim.root}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "alpha", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    raw = await resp.json()

    floats = [item.embedding for item in as_float.data]
    assert floats == [item.embedding for item in by_default.data]
    assert floats[0] != floats[1]
    assert all(math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5) for vector in floats)
    assert as_float.object == "list" and as_float.model == "text-embedding-3-small"
    # ceil(len / 4) per text: "alpha" is 2 tokens, "beta" 1.
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == 3
    encoded = raw["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == floats[0]
    assert raw["data"][0] == {"object": "embedding", "index": 0, "embedding": encoded}
    assert resp.headers["x-request-id"].startswith("req_")
    assert sim.stats["a"].by_format == {"openai_embeddings": 3}


async def test_embeddings_accept_token_arrays_and_dimensions(sim: SimProvider) -> None:
    async with oai(sim) as client:
        result = await client.embeddings.create(
            model="text-embedding-3-large", input=[[1, 2, 3], [4, 5]], dimensions=16
        )
    assert [len(item.embedding) for item in result.data] == [16, 16]
    assert result.usage.prompt_tokens == 5


async def test_embeddings_reject_an_empty_input_and_play_faults(sim: SimProvider) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=1))
    async with oai(sim) as client:
        with pytest.raises(openai.BadRequestError) as invalid:
            await client.embeddings.create(model="text-embedding-3-small", input="")
        with pytest.raises(openai.RateLimitError) as limited:
            await client.embeddings.create(model="text-embedding-3-small", input="x")
    assert invalid.value.param == "input"
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"


# --- OpenAI Responses API --------------------------------------------------------------------


async def test_responses_create_gives_output_text_and_usage(sim: SimProvider) -> None:
    async with oai(sim) as client:
        response = await client.responses.create(model="gpt-4o", input="hi")

    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == ("response", "completed", "gpt-4o")
    assert response.output_text == reply("gpt-4o")
    assert response.usage is not None
    assert response.usage.input_tokens == PROMPT_TOKENS
    assert response.usage.total_tokens == PROMPT_TOKENS + response.usage.output_tokens
    assert sim.requests[-1].path == "/v1/responses"
    assert sim.stats["a"].by_format == {"openai_responses": 1}


async def test_responses_stream_sends_numbered_events_and_completes(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    async with oai(sim) as client:
        stream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
        events = [event async for event in stream]
    resp = await http.post(
        f"{sim.root}/v1/responses",
        json={"model": "gpt-4o", "input": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    raw = await resp.read()

    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == reply("gpt-4o")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == reply("gpt-4o")
    assert [name for name, _ in named_events(raw)] == types
    assert b"[DONE]" not in raw


async def test_responses_stream_error_is_an_error_event_without_completion(
    sim: SimProvider,
) -> None:
    sim.inject("a", Fault.stream_error(after_chunks=2))
    async with oai(sim) as client:
        stream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
        events = [event async for event in stream]

    assert [e.type for e in events].count("response.output_text.delta") == 2
    last = events[-1]
    assert last.type == "error"
    assert last.code == "server_error"
    assert last.sequence_number == len(events) - 1
    assert "response.completed" not in [e.type for e in events]


async def test_responses_play_openai_error_faults(sim: SimProvider) -> None:
    sim.inject("a", Fault.insufficient_quota(), Fault.overloaded())
    async with oai(sim) as client:
        with pytest.raises(openai.RateLimitError) as quota:
            await client.responses.create(model="gpt-4o", input="hi")
        with pytest.raises(openai.InternalServerError) as overloaded:
            await client.responses.create(model="gpt-4o", input="hi")
    assert quota.value.code == "insufficient_quota"
    assert overloaded.value.status_code == 503


# --- Gemini ----------------------------------------------------------------------------------


async def test_gemini_generate_content_answers_candidates_and_usage(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    by_header = await post_gemini(http, sim)
    data = await by_header.json()
    by_query = await post_gemini(http, sim, query=f"?key={KEY}", headers={})

    assert by_header.status == 200 and by_query.status == 200
    candidate = data["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": reply(GEMINI)}], "role": "model"}
    assert (candidate["finishReason"], candidate["index"]) == ("STOP", 0)
    usage = data["usageMetadata"]
    assert usage["promptTokenCount"] == PROMPT_TOKENS
    assert usage["totalTokenCount"] == PROMPT_TOKENS + usage["candidatesTokenCount"]
    assert data["modelVersion"] == GEMINI
    # §5.1: no rate-limit headers, not even on a success.
    assert not [h for h in by_header.headers if "ratelimit" in h.lower() or "retry" in h.lower()]
    assert sim.requests[-1].path == f"/v1beta/models/{GEMINI}:generateContent"
    assert sim.stats["a"].by_format == {"gemini": 2}


async def test_gemini_stream_uses_crlf_sse_and_finishes_with_stop(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    resp = await post_gemini(http, sim, "streamGenerateContent", query="?alt=sse")
    events = gemini_events(await resp.read())
    no_alt = await post_gemini(http, sim, "streamGenerateContent")

    assert resp.headers["content-type"] == "text/event-stream"
    texts = [event["candidates"][0]["content"]["parts"][0]["text"] for event in events]
    assert "".join(texts) == reply(GEMINI)
    assert all("finishReason" not in event["candidates"][0] for event in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] > 0
    assert len({event["responseId"] for event in events}) == 1
    assert no_alt.status == 400


async def test_gemini_rate_limit_has_retry_info_and_a_per_minute_quota(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=2), Fault.insufficient_quota())
    per_minute = await post_gemini(http, sim)
    minute = (await per_minute.json())["error"]
    per_day = await post_gemini(http, sim)
    day = (await per_day.json())["error"]

    assert per_minute.status == 429
    assert (minute["code"], minute["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert minute["message"].endswith("Please retry in 2s.")
    kinds = [detail["@type"].rsplit(".", 1)[-1] for detail in minute["details"]]
    assert kinds == ["QuotaFailure", "Help", "RetryInfo"]
    violation = minute["details"][0]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"]["model"] == GEMINI
    assert minute["details"][2]["retryDelay"] == "2s"
    assert "retry-after" not in per_minute.headers

    assert per_day.status == 429
    day_kinds = [detail["@type"].rsplit(".", 1)[-1] for detail in day["details"]]
    assert day_kinds == ["QuotaFailure", "Help"]
    quota_id = day["details"][0]["violations"][0]["quotaId"]
    assert quota_id == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert "Please retry in" not in day["message"]


async def test_gemini_honest_limit_puts_the_bucket_wait_in_retry_info(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY, rpm=4)], clock=clock)
    async with provider.serve():
        statuses = [(await post_gemini(http, provider)).status for _ in range(5)]
        error = (await (await post_gemini(http, provider)).json())["error"]
        clock.advance(15)
        after_wait = await post_gemini(http, provider)

    assert statuses == [200] * 4 + [429]
    assert error["details"][-1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "15s",
    }
    assert error["details"][0]["violations"][0]["quotaValue"] == "4"
    assert after_wait.status == 200


async def test_gemini_bad_and_missing_keys_get_google_errors(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    bad = await post_gemini(http, sim, headers={"x-goog-api-key": "AIza-wrong"})
    missing = await post_gemini(http, sim, headers={})
    bad_error = (await bad.json())["error"]

    assert bad.status == 400
    assert bad_error["status"] == "INVALID_ARGUMENT"
    assert bad_error["message"] == "API key not valid. Please pass a valid API key."
    assert bad_error["details"][0]["reason"] == "API_KEY_INVALID"
    assert missing.status == 403
    assert (await missing.json())["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("fault", "status", "google_status", "text"),
    [
        pytest.param(
            Fault.overloaded(), 503, "UNAVAILABLE", "The model is overloaded.", id="overloaded"
        ),
        pytest.param(Fault.server_error(), 500, "INTERNAL", "An internal error", id="server-error"),
        pytest.param(
            Fault.context_length(),
            400,
            "INVALID_ARGUMENT",
            "exceeds the maximum number of tokens allowed",
            id="context-length",
        ),
        pytest.param(
            Fault.model_not_found(), 404, "NOT_FOUND", f"models/{GEMINI} is not found", id="model"
        ),
    ],
)
async def test_gemini_error_faults_use_the_google_envelope(
    sim: SimProvider,
    http: aiohttp.ClientSession,
    fault: Fault,
    status: int,
    google_status: str,
    text: str,
) -> None:
    sim.inject("a", fault)
    resp = await post_gemini(http, sim)
    error = (await resp.json())["error"]
    assert (resp.status, error["code"], error["status"]) == (status, status, google_status)
    assert text in error["message"]


async def test_gemini_stream_error_is_an_error_object_in_a_data_event(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    sim.inject("a", Fault.stream_error(after_chunks=1))
    resp = await post_gemini(http, sim, "streamGenerateContent", query="?alt=sse")
    events = gemini_events(await resp.read())

    assert resp.status == 200
    assert len(events) == 2
    assert events[-1] == {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }


# --- shared across formats -------------------------------------------------------------------


async def test_honest_limits_are_shared_by_every_format_of_a_key(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    provider = SimProvider(keys=[SimKey(name="a", api_key=KEY, rpm=3)], clock=clock)
    async with provider.serve() as base_url, oai(provider) as client, claude(provider) as ant:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        await ant.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
        assert (await post_gemini(http, provider)).status == 200
        async with azure(provider) as az:
            with pytest.raises(openai.RateLimitError):
                await az.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
        clock.advance(20)
        response = await client.responses.create(model="gpt-4o", input="hi")
        assert base_url == f"{provider.root}/v1"

    assert response.output_text == reply("gpt-4o")
    stats = provider.stats["a"]
    assert (stats.requests, stats.served, stats.rejected) == (5, 4, 1)
    assert stats.by_format == {
        "openai_chat": 1,
        "anthropic": 1,
        "gemini": 1,
        "azure_chat": 1,
        "openai_responses": 1,
    }


async def test_one_fault_script_plays_across_formats_in_order(
    sim: SimProvider, http: aiohttp.ClientSession
) -> None:
    sim.inject("a", Fault.overloaded(), Fault.overloaded(), Fault.overloaded())
    async with claude(sim) as ant, oai(sim) as client:
        with pytest.raises(anthropic.InternalServerError) as on_anthropic:
            await ant.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
        with pytest.raises(openai.InternalServerError) as on_openai:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    on_gemini = await post_gemini(http, sim)
    stats = await (await http.get(f"{sim.root}/_sim/stats")).json()

    assert (on_anthropic.value.status_code, on_anthropic.value.type) == (529, "overloaded_error")
    assert on_openai.value.status_code == 503
    assert on_gemini.status == 503
    assert sim.pending("a") == 0
    assert stats["a"]["by_format"] == {"anthropic": 1, "openai_chat": 1, "gemini": 1}
