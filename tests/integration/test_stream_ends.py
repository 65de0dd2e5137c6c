"""A stream ends at its dialect's last event, an event of its own, and nowhere else:
not where a model's text quotes it, and also where a Responses stream stops early as
the caller asked (`response.incomplete`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from aiohttp import web

from tests.conftest import HI, client, raw_upstream
from tests.integration.test_streaming import (
    ROLE,
    logs,  # noqa: F401  (the fixture)
    one_route,
    request_event,
)

pytestmark = pytest.mark.timeout(30)


def chunk(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(delta).encode() + b"\n\n"


def paused_stream(*events: bytes, pause_after: int, seconds: float) -> Callable:
    """`events`, with a pause of `seconds` after the first `pause_after` of them."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for at, event in enumerate(events):
            if at == pause_after:
                await asyncio.sleep(seconds)
            await response.write(event)
        await response.write_eof()
        return response

    return handle


async def test_text_that_quotes_the_terminator_does_not_end_the_stream(stack, logs):  # noqa: F811
    """Before, "data: [DONE]" in the text ended it: the relay gave the body 2 s to end,
    then closed the stream, served, without the rest of the answer or its usage."""
    quoting = chunk("An SSE stream ends with the line data: [DONE] and then")
    usage = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20,
                                      "total_tokens": 30}}  # fmt: skip
    events = (ROLE, quoting, chunk(" a blank line."), b"data: " + json.dumps(usage).encode()
              + b"\n\n", b"data: [DONE]\n\n")  # fmt: skip
    upstream_stream = paused_stream(*events, pause_after=2, seconds=2.5)
    async with raw_upstream("/v1/chat/completions", upstream_stream) as upstream:
        url = await stack.router(one_route(upstream))
        stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "An SSE stream ends with the line data: [DONE] and then a blank line."
    event = request_event(logs)
    assert (event["outcome"], event["tokens_in"], event["tokens_out"]) == ("served", 10, 20)


def responses_event(name: str, sequence: int, **fields: object) -> bytes:
    data = {"type": name, "sequence_number": sequence, **fields}
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def test_a_responses_stream_stopped_by_max_output_tokens_is_served(stack, logs):  # noqa: F811
    """`response.incomplete` is the answer the caller asked for, not an unfinished
    stream: before, the client got an extra error event after it, the request was
    logged failed with no tokens, and the route was charged a server error."""
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": [],
                "model": "gpt-4o", "usage": None}  # fmt: skip
    usage = {"input_tokens": 10, "output_tokens": 16, "total_tokens": 26}
    incomplete = {**response, "status": "incomplete", "usage": usage,
                  "incomplete_details": {"reason": "max_output_tokens"}}  # fmt: skip
    events = (
        responses_event("response.created", 0, response=response),
        responses_event(
            "response.output_text.delta",
            1,
            item_id="m1",
            output_index=0,
            content_index=0,
            delta="Hello",
            logprobs=[],
        ),
        responses_event("response.incomplete", 2, response=incomplete),
    )
    async with raw_upstream(
        "/v1/responses", paused_stream(*events, pause_after=0, seconds=0)
    ) as up:
        url = await stack.router(one_route(up))
        stream = await client(url).responses.create(
            model="gpt-4o", input="hi", max_output_tokens=16, stream=True
        )
        kinds = [event.type async for event in stream]
    assert kinds == ["response.created", "response.output_text.delta", "response.incomplete"]
    event = request_event(logs)
    assert (event["status"], event["outcome"], event["stream"]) == (200, "served", "ok")
    assert (event["tokens_in"], event["tokens_out"]) == (10, 16)
    assert event["attempts"] == ["u/gpt-4o:ok"]


async def test_a_callers_error_after_the_stream_began_is_rejected_not_failed(stack, logs):  # noqa: F811
    """An error event the provider blames on the request (`invalid_request_error`) after
    content: the client's fault, so `rejected`, as its error answer would have been.
    Before it was `failed`, which the error-ratio alert counts against the router."""
    error = {"error": {"type": "invalid_request_error", "code": "invalid_prompt",
                       "message": "the prompt was flagged", "param": None}}  # fmt: skip
    events = (ROLE, chunk("Hi"), b"data: " + json.dumps(error).encode() + b"\n\n")
    async with raw_upstream(
        "/v1/chat/completions", paused_stream(*events, pause_after=0, seconds=0)
    ) as up:
        url = await stack.router(one_route(up))
        stream = await client(url).chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        with pytest.raises(Exception, match="flagged"):
            async for _ in stream:
                pass
    event = request_event(logs)
    assert (event["status"], event["outcome"]) == (200, "rejected")
    assert event["attempts"] == ["u/gpt-4o:bad_request"]
