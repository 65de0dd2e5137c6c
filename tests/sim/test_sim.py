"""The simulated provider, driven over 127.0.0.1 by the official openai SDK and raw aiohttp.

The router's tests trust `router.sim` to speak OpenAI's wire format, so these tests check
it the way a real client would see it: SDK exception classes and fields, exact headers,
SSE bytes, connection drops.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from router.sim import Fault, SimKey, SimProvider
from router.sim.__main__ import build_parser, keys_from
from router.sim.openai.wire import go_duration
from tests.clock import FakeClock
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(20)

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
# 3 per reply + 3 per message + ceil(len("hi") / 4): the sim's documented estimate.
PROMPT_TOKENS = 7
REPLY_A = f"Hello from a via {MODEL}."
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s)?$|^\d+ms$")


@pytest.fixture
def sim(clock: FakeClock) -> SimProvider:
    return SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a")], clock=clock)


@pytest.fixture
async def base_url(sim: SimProvider) -> AsyncIterator[str]:
    async with sim.serve() as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="sk-sim-a", base_url=base_url, max_retries=0, timeout=5.0
    ) as sdk:
        yield sdk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def auth(api_key: str = "sk-sim-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


async def post_chat(
    http: aiohttp.ClientSession, base_url: str, api_key: str = "sk-sim-a", **body: Any
) -> aiohttp.ClientResponse:
    payload = {"model": MODEL, "messages": MESSAGES} | body
    return await http.post(f"{base_url}/chat/completions", json=payload, headers=auth(api_key))


def sse_payloads(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, checking the `data: ...\\n\\n` framing."""
    events = raw.decode().split("\n\n")
    assert events[-1] == "", "the body must end with a blank line"
    assert all(event.startswith("data: ") for event in events[:-1])
    return [event.removeprefix("data: ") for event in events[:-1]]


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait for the server side to catch up with something the client already did."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- healthy answers ---------------------------------------------------------------------


async def test_non_streaming_completion_returns_reply_and_usage(
    client: openai.AsyncOpenAI, sim: SimProvider
) -> None:
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == REPLY_A
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == PROMPT_TOKENS + completion.usage.completion_tokens
    assert sim.stats["a"].requests == 1
    assert sim.stats["a"].served == 1


async def test_sync_client_gets_a_completion(base_url: str) -> None:
    def call() -> str | None:
        with openai.OpenAI(
            api_key="sk-sim-a", base_url=base_url, max_retries=0, timeout=5.0
        ) as sdk:
            completion = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return completion.choices[0].message.content

    assert await asyncio.to_thread(call) == "Hello from a via gpt-4o."


async def test_configured_reply_replaces_the_default_text(http: aiohttp.ClientSession) -> None:
    sim = SimProvider(keys=[SimKey(name="b", api_key="sk-sim-b", reply="Custom words here")])
    async with sim.serve() as url:
        resp = await post_chat(http, url, api_key="sk-sim-b")
        body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "Custom words here"


async def test_reply_words_on_the_command_line_make_every_key_stream_that_many_chunks(
    http: aiohttp.ClientSession,
) -> None:
    """`--reply-words N` (bench/cpu.py --stream-words): long streams, as real answers are."""
    args = build_parser().parse_args(["--key", "a:sk-sim-a", "--key", "b:sk-sim-b",
                                      "--reply-words", "40", "--chunk-delay", "0.001"])  # fmt: skip
    keys = keys_from(args)
    assert [key.chunk_delay for key in keys] == [0.001, 0.001]
    async with SimProvider(keys=keys).serve() as url:
        resp = await post_chat(http, url, api_key="sk-sim-b", stream=True)
        events = [line for line in (await resp.read()).split(b"\n\n") if line]
    words = [json.loads(e[6:])["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert words == ["word"] + [" word"] * 39
    assert events[-1] == b"data: [DONE]"
    assert keys_from(build_parser().parse_args(["--key", "a:sk-sim-a"]))[0].reply is None


async def test_streaming_completion_yields_one_chunk_per_word_then_stops(
    client: openai.AsyncOpenAI, sim: SimProvider
) -> None:
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    words = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert words == ["Hello", " from", " a", " via", f" {MODEL}."]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert sim.stats["a"].streams_completed == 1


async def test_include_usage_chunk_appears_only_when_asked(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    plain = await post_chat(http, base_url, stream=True)
    assert plain.headers["content-type"] == "text/event-stream"
    plain_events = sse_payloads(await plain.read())
    with_usage = await post_chat(
        http, base_url, stream=True, stream_options={"include_usage": True}
    )
    usage_events = sse_payloads(await with_usage.read())

    assert plain_events[-1] == "[DONE]"
    plain_chunks = [json.loads(e) for e in plain_events[:-1]]
    assert all(chunk["choices"] for chunk in plain_chunks)
    assert all("usage" not in chunk for chunk in plain_chunks)

    assert usage_events[-1] == "[DONE]"
    usage_chunks = [json.loads(e) for e in usage_events[:-1]]
    assert len(usage_chunks) == len(plain_chunks) + 1
    assert all(chunk["usage"] is None for chunk in usage_chunks[:-1])
    last = usage_chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert last["usage"]["total_tokens"] == PROMPT_TOKENS + last["usage"]["completion_tokens"]


async def test_models_endpoint_lists_models(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert MODEL in models


async def test_requests_are_recorded_with_lowercase_headers_and_body(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    await post_chat(http, base_url, temperature=0.5)

    recorded = sim.requests[-1]
    assert recorded.key_name == "a"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer sk-sim-a"
    assert json.loads(recorded.body)["temperature"] == 0.5


# --- honest limits -------------------------------------------------------------------------


async def test_successful_responses_carry_ratelimit_headers_that_count_down(
    clock: FakeClock,
) -> None:
    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a", rpm=60, tpm=100_000)], clock=clock)
    async with (
        sim.serve() as url,
        openai.AsyncOpenAI(api_key="sk-sim-a", base_url=url, max_retries=0) as sdk,
    ):
        first = await sdk.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
        second = await sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=100
        )

    h1, h2 = first.headers, second.headers
    assert h1["x-ratelimit-limit-requests"] == "60"
    assert h1["x-ratelimit-limit-tokens"] == "100000"
    assert int(h1["x-ratelimit-remaining-requests"]) == 59
    assert int(h2["x-ratelimit-remaining-requests"]) == 58
    # The second request reserves its max_tokens, as OpenAI does.
    spent = int(h1["x-ratelimit-remaining-tokens"]) - int(h2["x-ratelimit-remaining-tokens"])
    assert spent == PROMPT_TOKENS + 100
    assert h1["x-ratelimit-reset-requests"] == "1s"
    assert h2["x-ratelimit-reset-requests"] == "2s"
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert DURATION.match(h2[name]), h2[name]
    assert h1["x-request-id"].startswith("req_")
    assert h1["x-request-id"] != h2["x-request-id"]


async def test_unlimited_key_sends_no_ratelimit_headers(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    resp = await post_chat(http, base_url)
    assert resp.status == 200
    assert not [name for name in resp.headers if name.lower().startswith("x-ratelimit")]
    assert resp.headers["x-request-id"].startswith("req_")


async def test_rpm_limit_rejects_third_request_until_the_clock_refills(
    clock: FakeClock,
) -> None:
    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a", rpm=2)], clock=clock)
    async with (
        sim.serve() as url,
        openai.AsyncOpenAI(api_key="sk-sim-a", base_url=url, max_retries=0) as sdk,
    ):
        for _ in range(2):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as rejected:
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)

        clock.advance(29.9)
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        clock.advance(0.1)
        completion = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)

    error = rejected.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    # One request refills every 60 s / 2 = 30 s.
    assert error.response.headers["retry-after"] == "30"
    assert error.response.headers["retry-after-ms"] == "30000"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1." in error.message
    assert "Please try again in 30s." in error.message
    assert completion.choices[0].message.content == REPLY_A
    assert sim.stats["a"].served == 3
    assert sim.stats["a"].rejected == 2


async def test_tpm_limit_rejects_with_the_wait_until_tokens_refill(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a", tpm=100)], clock=clock)
    async with sim.serve() as url:
        assert (await post_chat(http, url, max_tokens=60)).status == 200
        resp = await post_chat(http, url, max_tokens=60)
        body = await resp.json()
        clock.advance(20.4)
        again = await post_chat(http, url, max_tokens=60)

    # Each request needs 7 + 60 = 67 tokens; 33 are left, and 34 more take 20.4 s.
    assert resp.status == 429
    assert body["error"]["type"] == "tokens"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "Please try again in 20.4s." in body["error"]["message"]
    assert resp.headers["retry-after"] == "21"
    assert resp.headers["retry-after-ms"] == "20400"
    assert resp.headers["x-ratelimit-remaining-tokens"] == "33"
    assert again.status == 200


async def test_request_larger_than_tpm_is_rejected_without_a_retry_hint(
    clock: FakeClock,
) -> None:
    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a", tpm=1000)], clock=clock)
    async with (
        sim.serve() as url,
        openai.AsyncOpenAI(api_key="sk-sim-a", base_url=url, max_retries=0) as sdk,
    ):
        with pytest.raises(openai.RateLimitError) as rejected:
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5000)

    error = rejected.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "tokens"
    assert isinstance(error.body, dict)
    assert error.body["message"].startswith(f"Request too large for {MODEL}")
    assert "Limit 1000, Requested 5007." in error.message
    assert "try again" not in error.message
    assert "retry-after" not in error.response.headers
    assert "retry-after-ms" not in error.response.headers


# --- scripted error faults ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "exc_type", "status", "type_", "code", "text"),
    [
        pytest.param(
            Fault.rate_limit(),
            openai.RateLimitError,
            429,
            "requests",
            "rate_limit_exceeded",
            "Please try again in 2s.",
            id="rate-limit",
        ),
        pytest.param(
            Fault.insufficient_quota(),
            openai.RateLimitError,
            429,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota",
            id="insufficient-quota",
        ),
        pytest.param(
            Fault.auth(),
            openai.AuthenticationError,
            401,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided: sk-...",
            id="auth",
        ),
        pytest.param(
            Fault.server_error(),
            openai.InternalServerError,
            500,
            "server_error",
            None,
            "The server had an error processing your request.",
            id="server-error-500",
        ),
        pytest.param(
            Fault.server_error(502),
            openai.InternalServerError,
            502,
            "server_error",
            None,
            "The server had an error processing your request.",
            id="server-error-502",
        ),
        pytest.param(
            Fault.overloaded(),
            openai.InternalServerError,
            503,
            "server_error",
            None,
            "overloaded",
            id="overloaded",
        ),
        pytest.param(
            Fault.bad_request("Invalid value for 'temperature'.", code="bad", param="temperature"),
            openai.BadRequestError,
            400,
            "invalid_request_error",
            "bad",
            "Invalid value for 'temperature'.",
            id="bad-request",
        ),
        pytest.param(
            Fault.context_length(),
            openai.BadRequestError,
            400,
            "invalid_request_error",
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens. Please reduce the length of the messages.",
            id="context-length",
        ),
        pytest.param(
            Fault.model_not_found(),
            openai.NotFoundError,
            404,
            "invalid_request_error",
            "model_not_found",
            f"The model `{MODEL}` does not exist",
            id="model-not-found",
        ),
    ],
)
async def test_error_fault_reaches_the_sdk_as_the_real_openai_error(
    client: openai.AsyncOpenAI,
    sim: SimProvider,
    fault: Fault,
    exc_type: type[openai.APIStatusError],
    status: int,
    type_: str,
    code: str | None,
    text: str,
) -> None:
    sim.inject("a", fault)
    with pytest.raises(exc_type) as raised:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    error = raised.value
    assert error.status_code == status
    assert error.type == type_
    assert error.code == code
    assert text in error.message
    assert error.response.headers["x-request-id"].startswith("req_")
    assert sim.stats["a"].rejected == 1


async def test_rate_limit_fault_sends_retry_after_headers(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=1.5))
    resp = await post_chat(http, base_url)
    body = await resp.json()

    assert resp.status == 429
    assert resp.headers["retry-after"] == "2"
    assert resp.headers["retry-after-ms"] == "1500"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-reset-requests"] == "1.5s"
    assert "x-ratelimit-limit-tokens" in resp.headers
    assert body["error"]["param"] is None
    assert "Please try again in 1.5s." in body["error"]["message"]


async def test_rate_limit_fault_with_headers_off_keeps_the_hint_only_in_the_text(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=0.084, headers=False))
    resp = await post_chat(http, base_url)
    body = await resp.json()

    assert "retry-after" not in resp.headers
    assert "retry-after-ms" not in resp.headers
    assert "Please try again in 84ms." in body["error"]["message"]


async def test_rate_limit_fault_without_retry_after_gives_no_hint(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=None))
    resp = await post_chat(http, base_url)
    body = await resp.json()

    assert resp.status == 429
    assert "retry-after" not in resp.headers
    assert "retry-after-ms" not in resp.headers
    assert "try again" not in body["error"]["message"]
    assert body["error"]["code"] == "rate_limit_exceeded"


async def test_faults_are_consumed_in_order_one_per_request(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.rate_limit(retry_after=2.0), Fault.server_error(500))
    statuses = [(await post_chat(http, base_url)).status for _ in range(3)]
    assert statuses == [429, 500, 200]


async def test_times_repeats_a_fault_and_minus_one_repeats_it_until_cleared(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.overloaded(), times=3)
    assert [(await post_chat(http, base_url)).status for _ in range(4)] == [503, 503, 503, 200]

    sim.inject("a", Fault.rate_limit(retry_after=1.0), times=-1)
    assert [(await post_chat(http, base_url)).status for _ in range(6)] == [429] * 6
    sim.clear("a")
    assert (await post_chat(http, base_url)).status == 200
    assert sim.stats["a"].requests == 11


async def test_auth_fault_masks_the_key(http: aiohttp.ClientSession) -> None:
    api_key = "sk-sim-0123456789abcdef"
    sim = SimProvider(keys=[SimKey(name="a", api_key=api_key)])
    sim.inject("a", Fault.auth())
    async with sim.serve() as url:
        resp = await post_chat(http, url, api_key=api_key)
        message = (await resp.json())["error"]["message"]

    assert resp.status == 401
    assert "Incorrect API key provided: sk-...cdef." in message
    assert api_key not in message


async def test_unknown_key_gets_401_with_a_masked_key(base_url: str, sim: SimProvider) -> None:
    api_key = "sk-not-a-sim-key-9876"
    async with openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as raised:
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)

    error = raised.value
    assert error.code == "invalid_api_key"
    assert "sk-...9876" in error.message
    assert api_key not in error.message
    assert sim.requests[-1].key_name == ""
    assert sim.stats["a"].requests == 0


async def test_missing_key_gets_401(http: aiohttp.ClientSession, base_url: str) -> None:
    resp = await http.post(f"{base_url}/chat/completions", json={"model": MODEL})
    body = await resp.json()
    assert resp.status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["message"].startswith("You didn't provide an API key.")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(b"{not json", None, id="malformed-json"),
        pytest.param(b'{"messages": [{"role": "user", "content": "hi"}]}', None, id="no-model"),
        pytest.param(b'{"model": "gpt-4o-mini"}', "messages", id="no-messages"),
        pytest.param(b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages", id="bad-type"),
    ],
)
async def test_invalid_bodies_get_openai_400s(
    http: aiohttp.ClientSession, base_url: str, body: bytes, param: str | None
) -> None:
    headers = auth() | {"Content-Type": "application/json"}
    resp = await http.post(f"{base_url}/chat/completions", data=body, headers=headers)
    error = (await resp.json())["error"]
    assert resp.status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


# --- scripted transport faults --------------------------------------------------------------


async def test_stream_cut_makes_sdk_stream_iteration_raise(
    client: openai.AsyncOpenAI, sim: SimProvider
) -> None:
    sim.inject("a", Fault.stream_cut(after_chunks=2))
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received: list[str | None] = []
    with pytest.raises((httpx.TransportError, openai.APIError)):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    # The role chunk, then the two content chunks asked for.
    assert received == ["", "Hello", " from"]
    stats = sim.stats["a"]
    assert (stats.served, stats.dropped, stats.streams_completed) == (1, 1, 0)


async def test_stream_cut_on_a_non_streaming_request_drops_the_connection(
    client: openai.AsyncOpenAI, sim: SimProvider
) -> None:
    sim.inject("a", Fault.stream_cut())
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert sim.stats["a"].dropped == 1


async def test_stream_error_makes_sdk_stream_iteration_raise_api_error(
    client: openai.AsyncOpenAI, sim: SimProvider, http: aiohttp.ClientSession, base_url: str
) -> None:
    sim.inject("a", Fault.stream_error(after_chunks=1))
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as raised:
        async for _ in stream:
            pass
    assert "The server had an error" in raised.value.message

    sim.inject("a", Fault.stream_error(after_chunks=1))
    resp = await post_chat(http, base_url, stream=True)
    events = sse_payloads(await resp.read())
    assert resp.status == 200
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert "[DONE]" not in events
    assert len(events) == 3


async def test_stream_faults_with_zero_chunks_fail_right_after_the_role_chunk(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.stream_error(after_chunks=0))
    errored = sse_payloads(await (await post_chat(http, base_url, stream=True)).read())
    assert json.loads(errored[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert json.loads(errored[1])["error"]["type"] == "server_error"
    assert len(errored) == 2

    sim.inject("a", Fault.stream_cut(after_chunks=0))
    cut = await post_chat(http, base_url, stream=True)
    first = await cut.content.readline()
    assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(aiohttp.ClientPayloadError):
        await cut.read()

    sim.inject("a", Fault.stream_stall(after_chunks=0))
    stalled = await post_chat(http, base_url, stream=True)
    assert b'"role":"assistant"' in await stalled.content.readline()
    assert await stalled.content.readline() == b"\n"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(stalled.content.readline(), timeout=0.2)
    stalled.close()
    await eventually(lambda: sim.stats["a"].cancelled == 1)
    assert sim.stats["a"].dropped == 1


async def test_hang_until_the_client_times_out_counts_cancelled(
    base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.hang())
    async with openai.AsyncOpenAI(
        api_key="sk-sim-a", base_url=base_url, max_retries=0, timeout=0.3
    ) as sdk:
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        await eventually(lambda: sim.stats["a"].cancelled == 1)
        # The next request is served normally on a fresh connection.
        completion = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == REPLY_A


async def test_stream_stall_goes_silent_after_its_chunks_and_counts_cancelled(
    http: aiohttp.ClientSession, base_url: str, sim: SimProvider
) -> None:
    sim.inject("a", Fault.stream_stall(after_chunks=1))
    resp = await post_chat(http, base_url, stream=True)
    lines = [await resp.content.readline() for _ in range(4)]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(resp.content.readline(), timeout=0.3)
    resp.close()

    assert [json.loads(line.removeprefix(b"data: ")) for line in lines if line.strip()]
    assert b'"content":"Hello"' in lines[2]
    await eventually(lambda: sim.stats["a"].cancelled == 1)
    assert sim.stats["a"].streams_completed == 0


async def test_delay_fault_holds_back_the_response_head(
    client: openai.AsyncOpenAI, sim: SimProvider
) -> None:
    sim.inject("a", Fault.delay(0.3))
    started = time.monotonic()
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - started >= 0.3
    assert completion.choices[0].message.content == REPLY_A


async def test_shutdown_releases_a_hung_request_quickly(http: aiohttp.ClientSession) -> None:
    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a")])
    sim.inject("a", Fault.hang())
    async with sim.serve() as url:
        pending = asyncio.create_task(post_chat(http, url))
        await eventually(lambda: sim.stats["a"].requests == 1)
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert sim.stats["a"].dropped == 1


# --- control endpoints and fault values ------------------------------------------------------


async def test_control_endpoints_script_faults_and_report_stats(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    root = base_url.removesuffix("/v1")
    script = {
        "key": "a",
        "faults": [
            {"kind": "rate_limit", "retry_after": 2},
            {"kind": "server_error", "status": 502},
        ],
        "times": 1,
    }
    queued = await http.post(f"{root}/_sim/faults", json=script)
    assert (queued.status, await queued.json()) == (200, {"key": "a", "queued": 2})
    first = await post_chat(http, base_url)
    assert (first.status, first.headers["retry-after"]) == (429, "2")

    cleared = await http.delete(f"{root}/_sim/faults")
    assert cleared.status == 200
    assert (await post_chat(http, base_url)).status == 200

    stats = await (await http.get(f"{root}/_sim/stats")).json()
    assert stats["a"]["requests"] == 2
    assert stats["a"]["served"] == 1
    assert stats["a"]["rejected"] == 1
    assert stats["a"]["cancelled"] == 0
    assert stats["a"]["streams_completed"] == 0

    unknown_key = await http.post(f"{root}/_sim/faults", json={"key": "zz", "faults": []})
    assert unknown_key.status == 404
    bad_kind = await http.post(f"{root}/_sim/faults", json={"key": "a", "faults": [{"kind": "x"}]})
    assert bad_kind.status == 400


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limit(),
        Fault.rate_limit(retry_after=None, headers=False),
        Fault.insufficient_quota(),
        Fault.auth(),
        Fault.server_error(503),
        Fault.overloaded(),
        Fault.bad_request("nope", code="c", param="p"),
        Fault.context_length(),
        Fault.model_not_found(),
        Fault.delay(1.5),
        Fault.hang(),
        Fault.stream_cut(3),
        Fault.stream_error(0),
        Fault.stream_stall(),
    ],
    ids=lambda fault: fault.kind,
)
def test_fault_round_trips_through_a_dict(fault: Fault) -> None:
    data = json.loads(json.dumps(fault.to_dict()))
    assert Fault.from_dict(data) == fault


def test_fault_from_dict_rejects_unknown_kinds_and_arguments() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.from_dict({"kind": "meteor"})
    with pytest.raises(ValueError, match="takes no"):
        Fault.from_dict({"kind": "hang", "seconds": 1})
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "server_error", "status": 404})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.0, "0s", id="zero"),
        pytest.param(0.012, "12ms", id="ms"),
        pytest.param(1.0, "1s", id="second"),
        pytest.param(360.0, "6m0s", id="minutes"),
        pytest.param(179.56, "2m59.56s", id="fraction"),
        pytest.param(3_725.5, "1h2m5.5s", id="hours"),
    ],
)
def test_reset_durations_are_formatted_like_go(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# --- the CLI ----------------------------------------------------------------------------------


async def test_cli_prints_its_url_serves_and_stops_on_sigterm(
    http: aiohttp.ClientSession,
) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.sim",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--key",
        "a:sk-cli-a:60:100000",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert match, line
        resp = await post_chat(http, match.group(1), api_key="sk-cli-a")
        assert resp.status == 200
        assert resp.headers["x-ratelimit-remaining-requests"] == "59"

        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        assert await proc.stdout.read() == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
