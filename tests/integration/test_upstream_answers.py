"""Answers no upstream should give (a redirect, an empty 200, JSON nested 100,000 deep in
an error or an event) are that upstream's failure: the router fails over to the next
route, and never answers the client with a 500 or with what the upstream sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from router.sim import SimKey
from tests.configs import key, model, route, routes_yaml, sim_key
from tests.conftest import HI, SIM_A, Stack, raw_upstream

Reply = Callable[[web.Request], web.StreamResponse]
DEEP = b"[" * 100_000 + b"]" * 100_000
NINES = b"9" * 5000  # digits of a token count
ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'


def sse(*events: bytes) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response

    return reply


def plain(status: int, body: bytes, **headers: str) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return reply


@asynccontextmanager
async def bad_first(stack: Stack, reply: Reply) -> AsyncIterator[str]:
    """A router whose model `m` tries the upstream answering with `reply` first, then a
    good simulated one. Yields the router's URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await reply(request)

    _, sim_url = await stack.sim(SIM_A)
    async with raw_upstream("/v1/chat/completions", handle) as bad:
        config = routes_yaml(
            keys=[key("bad", f"{bad}/v1", api_key="sk-bad-0000000001"), sim_key(SIM_A, sim_url)],
            models={"m": model(route("bad", "gpt-4o"), route("a", "gpt-4o", priority=2))},
        )
        yield await stack.router(config)


async def chat(url: str, *, stream: bool) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "m", "messages": HI, "stream": stream}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body, allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def route_state(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/admin/routes") as response:
        return {r["route"]: r for r in (await response.json())["routes"]}


@pytest.mark.parametrize(
    ("reply", "failure"),
    [
        pytest.param(plain(302, b""), "redirect", id="302-without-location"),
        pytest.param(
            plain(301, b"moved", Location="https://elsewhere.example/v1/chat/completions"),
            "redirect",
            id="301",
        ),
        pytest.param(plain(307, b"", Location="/v2/chat"), "redirect", id="307"),
        pytest.param(
            plain(200, b"", **{"Content-Type": "application/json"}), "server_error", id="empty-200"
        ),
        pytest.param(
            plain(
                200,
                b"<html><body>Down for maintenance</body></html>",
                **{"Content-Type": "text/html"},
            ),
            "server_error",
            id="html-200",
        ),
        pytest.param(
            plain(200, b"upstream connect error", **{"Content-Type": "application/json"}),
            "server_error",
            id="not-json-200",
        ),
        pytest.param(
            plain(
                200,
                b'{\n  "error": {"message": "internal", "type": "server_error"}}',
                **{"Content-Type": "application/json"},
            ),
            "server_error",
            id="error-object-200",
        ),
        pytest.param(
            plain(
                200,
                b'{"error":{"message":"slow down","type":"rate_limit_error"}}',
                **{"Content-Type": "application/json"},
            ),
            "rate_limited",
            id="rate-limit-object-200",
        ),
        pytest.param(plain(500, DEEP), "server_error", id="500-deep"),
        pytest.param(plain(429, b'{"error":' + DEEP + b"}"), "server_error", id="429-deep"),
        pytest.param(
            plain(400, b'{"error":' + b"[" * 1000 + b"]" * 1000 + b"}"),
            "server_error",
            id="400-1000-deep",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_broken_answer_fails_over_to_the_next_route(stack, reply, failure, stream):
    async with bad_first(stack, reply) as url:
        status, headers, body = await chat(url, stream=stream)
        assert status == 200, body[:300]
        assert headers["x-router-route"] == "a/gpt-4o"
        assert headers["x-router-attempts"] == "2"
        assert "Location" not in headers
        if stream:
            assert body.endswith(b"data: [DONE]\n\n")
        else:
            assert json.loads(body)["choices"][0]["message"]["content"]
        state = (await route_state(url))["bad/gpt-4o"]
        assert state["last_error"] == failure
        if failure == "redirect":  # a misconfigured route: out of rotation, not retried
            assert state["state"] == "disabled"


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([b'data: {"error":' + DEEP + b"}\n\n"], id="deep-error-event"),
        pytest.param([ROLE, b'data: {"error":' + DEEP + b"}\n\n"], id="after-the-role"),
        pytest.param(
            [b'data: {"error":{"message":' + b"[" * 1000 + b"]" * 1000 + b"}}\n\n"],
            id="1000-deep",
        ),
    ],
)
async def test_a_deep_error_event_before_the_first_content_fails_over(stack, events):
    async with bad_first(stack, sse(*events)) as url:
        status, headers, body = await chat(url, stream=True)
        assert status == 200
        assert headers["x-router-route"] == "a/gpt-4o"
        assert headers["x-router-attempts"] == "2"
        assert body.endswith(b"data: [DONE]\n\n") and b"[[[" not in body
        assert (await route_state(url))["bad/gpt-4o"]["last_error"] == "server_error"


def completion(usage: bytes) -> bytes:
    return (
        b'{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],'
        b'"usage":' + usage + b"}"
    )


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param(b'{"prompt_tokens":-5,"completion_tokens":2}', id="negative"),
        pytest.param(b'{"completion_tokens":2,"prompt_tokens":%s}' % NINES[:5000], id="5000"),
        pytest.param(b'{"prompt_tokens":%s,"completion_tokens":2}' % NINES[:4000], id="4000"),
        pytest.param(b'{"completion_tokens":2,"prompt_tokens":"many"}', id="a-string"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_nonsense_token_counts_are_no_counts_not_a_router_error(stack, usage, stream):
    """The answer is the upstream's and goes to the client; counts that cannot be true
    are not charged (prometheus refuses a negative, a float a 4,000-digit integer)."""
    if stream:
        chunk = b'{"choices":[],"usage":' + usage + b"}"
        reply = sse(ROLE, TEXT, b"data: " + chunk + b"\n\n", b"data: [DONE]\n\n")
    else:
        reply = plain(200, completion(usage), **{"Content-Type": "application/json"})
    async with bad_first(stack, reply) as url:
        status, headers, body = await chat(url, stream=stream)
        assert status == 200, body[:300]
        assert headers["x-router-route"] == "bad/gpt-4o"
        if stream:
            assert body.startswith(ROLE + TEXT) and body.endswith(b"data: [DONE]\n\n")
            assert b"HTTP/1.1" not in body
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as metrics:
            text = await metrics.text()
        counted = [
            line
            for line in text.splitlines()
            if line.startswith("llm_router_tokens_total{") and 'direction="input"' in line
        ]
        assert all(line.endswith(" 0.0") for line in counted), counted


ANT = SimKey(name="ant", api_key="sk-ant-sim-key-0000000001")
MESSAGE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
    b'"role":"assistant","content":[],"model":"claude","usage":{"input_tokens":1,'
    b'"output_tokens":0}}}\n\n'
)


@pytest.mark.parametrize("before", [b"", MESSAGE_START], ids=["first", "after-message-start"])
async def test_a_deep_anthropic_error_event_fails_over(stack, before):
    deep_error = b"event: error\ndata: " + DEEP + b"\n\n"

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await sse(before, deep_error)(request)

    sim, _ = await stack.sim(ANT)
    async with raw_upstream("/v1/messages", handle) as bad:
        config = routes_yaml(
            keys=[
                key("bad", bad, api_key="sk-ant-bad-000000001", provider="anthropic"),
                sim_key(ANT, sim.root, provider="anthropic"),
            ],
            models={
                "claude": model(
                    route("bad", "claude-sonnet-4-6"),
                    route("ant", "claude-sonnet-4-6", priority=2),
                )
            },
        )
        url = await stack.router(config)
        body = {"model": "claude", "max_tokens": 32, "messages": HI, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/messages", json=body) as response,
        ):
            assert response.status == 200
            assert response.headers["x-router-route"] == "ant/claude-sonnet-4-6"
            assert (await response.read()).rstrip().endswith(b'{"type":"message_stop"}')


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_translated_route_follows_no_redirect_with_its_key(stack, stream):
    """An OpenAI client on an Anthropic key goes through litellm, whose own HTTP clients
    follow redirects: the key would travel to wherever the Location points. The route
    is misconfigured; the request fails over and the redirect target hears nothing."""
    reached: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"error": {"type": "not_found_error", "message": "no"}})

    async with raw_upstream("/v1/messages", elsewhere) as target:

        async def redirect(request: web.Request) -> web.Response:
            await request.read()
            raise web.HTTPTemporaryRedirect(f"{target}/v1/messages")

        async with raw_upstream("/v1/messages", redirect) as bad:
            _, sim_url = await stack.sim(SIM_A)
            config = routes_yaml(
                keys=[
                    key("bad", bad, api_key="sk-ant-bad-0000000001", provider="anthropic"),
                    sim_key(SIM_A, sim_url),
                ],
                models={
                    "m": model(route("bad", "claude-sonnet-4-6"), route("a", "gpt-4o", priority=2))
                },
            )
            url = await stack.router(config)
            status, headers, body = await chat(url, stream=stream)
    assert status == 200, body[:300]
    assert headers["x-router-route"] == "a/gpt-4o"
    assert reached == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_an_anthropic_client_on_an_openai_key_follows_no_redirect(stack, stream):
    """The other way round: Anthropic's Messages on an OpenAI key goes through litellm's
    OpenAI handler, whose own SDK client follows redirects, with or without a `proxy:`
    on the key. The request fails over and the redirect target hears nothing."""
    reached: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"error": {"type": "invalid_request_error", "message": "no"}})

    async with raw_upstream("/v1/chat/completions", elsewhere) as target:

        async def redirect(request: web.Request) -> web.Response:
            await request.read()
            raise web.HTTPTemporaryRedirect(f"{target}/v1/chat/completions")

        async with raw_upstream("/v1/chat/completions", redirect) as bad:
            sim, _ = await stack.sim(ANT)
            config = routes_yaml(
                keys=[
                    key("bad", f"{bad}/v1", api_key="sk-bad-openai-0000000001"),
                    sim_key(ANT, sim.root, provider="anthropic"),
                ],
                models={
                    "m": model(
                        route("bad", "gpt-4o"), route("ant", "claude-sonnet-4-6", priority=2)
                    )
                },
            )
            url = await stack.router(config)
            body = {"model": "m", "max_tokens": 32, "messages": HI, "stream": stream}
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{url}/v1/messages", json=body) as response,
            ):
                text = await response.read()
                assert response.status == 200, text[:300]
                assert response.headers["x-router-route"] == "ant/claude-sonnet-4-6"
    assert reached == []


async def test_a_stream_asked_for_and_a_whole_answer_given_fails_over(stack):
    """An upstream that ignores `stream` answers with a whole completion: the client
    would get no event and no error; the next route streams."""
    completion = json.dumps({"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ]}).encode()  # fmt: skip
    whole = plain(200, completion, **{"Content-Type": "application/json"})
    async with bad_first(stack, whole) as url:
        status, headers, body = await chat(url, stream=True)
        assert (status, headers["x-router-route"]) == (200, "a/gpt-4o")
        assert body.endswith(b"data: [DONE]\n\n")
        assert (await route_state(url))["bad/gpt-4o"]["last_error"] == "server_error"
        status, headers, body = await chat(url, stream=False)  # a whole one, asked for
        assert json.loads(body)["choices"][0]["message"]["content"] == "Hi"


async def test_an_event_stream_named_in_capitals_is_streamed(stack):
    """A media type is case-insensitive: `Text/Event-Stream` is relayed as a stream."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "Text/Event-Stream"})
        await response.prepare(request)
        await response.write(ROLE + TEXT + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async with bad_first(stack, reply) as url:
        status, headers, body = await chat(url, stream=True)
        assert (status, headers["x-router-route"]) == (200, "bad/gpt-4o")
        assert body.endswith(b"data: [DONE]\n\n")


def slow_body(gaps: list[float]) -> Reply:
    """A whole answer whose head comes at once and whose body comes a piece after each
    of `gaps` (seconds): whitespace first, as a gateway pads a pending answer."""
    body = json.dumps({"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ]}).encode()  # fmt: skip

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for gap in gaps:
            await asyncio.sleep(gap)
            await response.write(b" ")
        await response.write(body)
        await response.write_eof()
        return response

    return reply


@pytest.mark.parametrize(
    ("gaps", "served_by"),
    [
        pytest.param([0.3] * 5, "bad/gpt-4o", id="slow-but-steady"),
        pytest.param([0.1, 1.2], "a/gpt-4o", id="a-gap-past-idle"),
    ],
)
async def test_a_whole_answer_may_take_longer_than_idle_while_its_bytes_keep_coming(
    stack, gaps, served_by
):
    """`idle` bounds the wait between a body's bytes, not the whole body: 1.5 s of
    bytes 0.3 s apart is served with idle 0.6 s (it was cut at 0.6 s and sent again
    elsewhere, billed twice); a pause longer than idle still fails over."""
    _, sim_url = await stack.sim(SIM_A)

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await slow_body(gaps)(request)

    async with raw_upstream("/v1/chat/completions", handle) as bad:
        config = routes_yaml(
            keys=[key("bad", f"{bad}/v1", api_key="sk-bad-0000000001"), sim_key(SIM_A, sim_url)],
            models={"m": model(route("bad", "gpt-4o"), route("a", "gpt-4o", priority=2))},
            timeouts={"idle": 0.6},
        )
        url = await stack.router(config)
        status, headers, body = await chat(url, stream=False)
    assert (status, headers["x-router-route"]) == (200, served_by)
    assert json.loads(body)["choices"][0]["message"]["content"]


async def test_an_event_stream_under_another_media_type_is_still_relayed(stack):
    """Events under `application/json` (a proxy that sets its own type): not a whole
    answer, not a failure: relayed as they came, as before."""
    events = ROLE + TEXT + b"data: [DONE]\n\n"
    async with bad_first(stack, plain(200, events, **{"Content-Type": "application/json"})) as url:
        status, headers, body = await chat(url, stream=True)
    assert (status, headers["x-router-route"], body) == (200, "bad/gpt-4o", events)


async def test_embeddings_asked_to_stream_are_answered_whole(stack):
    """`stream: true` means nothing to /v1/embeddings: its whole answer is served, not
    taken for an upstream that ignored a stream (every route would fail and open)."""
    _, sim_url = await stack.sim(SIM_A)
    url = await stack.router(
        routes_yaml(keys=[sim_key(SIM_A, sim_url)],
                    models={"e": model(route("a", "text-embedding-3-small"))})
    )  # fmt: skip
    body = {"model": "e", "input": "hi", "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/embeddings", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        assert (await response.json())["data"][0]["embedding"]


async def test_a_follow_up_whose_answer_is_on_another_key_finds_it_there(stack):
    """A Responses follow-up the router has no home for (made through another replica,
    or before a restart): the key whose account lacks the stored answer says 404
    previous_response_not_found; the next key is tried, and the first is not taken out
    (it was out for an hour as misconfigured). Where no key has it, that 404 goes back."""
    missing = json.dumps({"error": {
        "message": "Previous response with id 'resp_x' not found.",
        "type": "invalid_request_error", "param": "previous_response_id",
        "code": "previous_response_not_found",
    }}).encode()  # fmt: skip

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=404, body=missing, content_type="application/json")

    _, sim_url = await stack.sim(SIM_A)
    async with raw_upstream("/v1/responses", handle) as bad:
        config = routes_yaml(
            keys=[key("bad", f"{bad}/v1", api_key="sk-bad-0000000001"), sim_key(SIM_A, sim_url)],
            models={
                "m": model(route("bad", "gpt-4o"), route("a", "gpt-4o", priority=2)),
                "only": model(route("bad", "gpt-4o")),
            },
        )
        url = await stack.router(config)
        body = {"model": "m", "input": "and then?", "previous_response_id": "resp_x"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/responses", json=body) as response:
                assert response.status == 200, await response.text()
                assert response.headers["x-router-route"] == "a/gpt-4o"
            state = (await route_state(url))["bad/gpt-4o"]
            assert state["state"] == "available" and state["last_error"] == "not_on_this_key"
            only = {**body, "model": "only"}  # no key holds it: its 404 goes back
            async with session.post(f"{url}/v1/responses", json=only) as response:
                assert response.status == 404
                error = (await response.json())["error"]
                assert error["code"] == "previous_response_not_found"
