"""OpenAI's Responses API (`POST /v1/responses`) as a `WireFormat`.

Auth, headers and error bodies are OpenAI's (`OpenAIWireFormat`). The reply is a `response`
object carrying every field openai-python 2.x's `Response` model requires
(`types/responses/response.py`: id, created_at, model, object, output,
parallel_tool_calls, tool_choice, tools), so `response.output_text` gives the reply.

A stream is named events, `event: X\\ndata: {"type": "X", "sequence_number": n, ...}`
(`types/responses/response_stream_event.py`), with no `[DONE]`: `response.created`,
`response.in_progress`, `response.output_item.added`, `response.content_part.added`,
one `response.output_text.delta` per word, `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, `response.completed`. A
mid-stream failure is the SDK's `ResponseErrorEvent`: `event: error` with
`{"type": "error", "code", "message", "param", "sequence_number"}`.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from router.sim.openai import errors as openai_errors
from router.sim.openai.base import OpenAIWireFormat
from router.sim.openai.chat import positive_int
from router.sim.tokens import estimate_prompt_tokens
from router.sim.wire_format import (
    FormatName,
    InvalidRequest,
    ModelCall,
    StreamEncoder,
    Usage,
    dumps,
    load_object,
    named_event,
)


def parse_responses_request(body: bytes) -> ModelCall:
    data = load_object(body)
    if data is None:
        raise InvalidRequest(openai_errors.unparsable_json())
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(openai_errors.missing_parameter("model"))
    items = data.get("input")
    if items is None:
        raise InvalidRequest(openai_errors.missing_parameter("input"))
    if isinstance(items, str):
        messages: list[dict[str, Any]] = [{"content": items}]
    elif isinstance(items, list) and all(isinstance(item, dict) for item in items):
        # Message items carry `content`; others (function outputs, ...) count as JSON.
        messages = [item if "content" in item else {"content": [item]} for item in items]
    else:
        raise InvalidRequest(openai_errors.invalid_type("input", "a string or an array"))
    instructions = data.get("instructions")
    return ModelCall(
        model=model,
        stream=data.get("stream") is True,
        prompt_tokens=estimate_prompt_tokens(
            messages, system=instructions if isinstance(instructions, str) else ""
        ),
        max_tokens=positive_int(data, ("max_output_tokens",)),
    )


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponseBuilder:
    """The ids and fields shared by every view (body, stream events) of one response."""

    __slots__ = ("created_at", "item_id", "model", "response_id", "text", "usage")

    def __init__(self, model: str, text: str, usage: Usage) -> None:
        self.response_id = f"resp_{secrets.token_hex(24)}"
        self.item_id = f"msg_{secrets.token_hex(24)}"
        self.created_at = int(time.time())
        self.model = model
        self.text = text
        self.usage = usage

    def item(self, *, done: bool) -> dict[str, Any]:
        return {
            "type": "message",
            "id": self.item_id,
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": [_text_part(self.text)] if done else [],
        }

    def response(self, *, done: bool) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": "completed" if done else "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model,
            "output": [self.item(done=True)] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": _usage(self.usage) if done else None,
            "user": None,
            "metadata": {},
        }


class ResponseStream:
    """The named events of one streamed response, numbered by `sequence_number`."""

    __slots__ = ("_built", "_sequence")

    def __init__(self, built: ResponseBuilder) -> None:
        self._built = built
        self._sequence = 0

    def _event(self, type_: str, **fields: Any) -> bytes:
        data = {"type": type_, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return named_event(type_, data)

    def _part_fields(self) -> dict[str, Any]:
        return {"item_id": self._built.item_id, "output_index": 0, "content_index": 0}

    def opening(self) -> list[bytes]:
        built = self._built
        return [
            self._event("response.created", response=built.response(done=False)),
            self._event("response.in_progress", response=built.response(done=False)),
            self._event("response.output_item.added", output_index=0, item=built.item(done=False)),
            self._event("response.content_part.added", **self._part_fields(), part=_text_part("")),
        ]

    def content(self, piece: str) -> bytes:
        return self._event(
            "response.output_text.delta", **self._part_fields(), delta=piece, logprobs=[]
        )

    def closing(self) -> list[bytes]:
        built = self._built
        return [
            self._event(
                "response.output_text.done", **self._part_fields(), text=built.text, logprobs=[]
            ),
            self._event(
                "response.content_part.done", **self._part_fields(), part=_text_part(built.text)
            ),
            self._event("response.output_item.done", output_index=0, item=built.item(done=True)),
            self._event("response.completed", response=built.response(done=True)),
        ]

    def error(self) -> bytes:
        message = "The server had an error while processing your request. Sorry about that!"
        return self._event("error", code="server_error", message=message, param=None)


class OpenAIResponses(OpenAIWireFormat):
    name: FormatName = "openai_responses"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_responses_request(body)

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return dumps(ResponseBuilder(call.model, text, usage).response(done=True))

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        return ResponseStream(ResponseBuilder(call.model, text, usage))
