"""Anthropic Messages (`POST /v1/messages`) as a `WireFormat`.

Key: `x-api-key`, or `Authorization: Bearer` as anthropic-sdk-python 2.12 sends it
(litellm-notes.md); both are accepted. `anthropic-version` is recorded with the other
headers but not required, so clients that omit it still get answers. `max_tokens` is
required, as it is upstream.

Replies are `type: "message"` objects; streams are §9.2 exactly: `message_start`,
`content_block_start`, `ping`, one `content_block_delta` per word, `content_block_stop`,
`message_delta` (stop reason, output tokens), `message_stop`, each framed
`event: X\\ndata: {...}\\n\\n`. Every response carries `request-id`, and a limited key's
responses carry the `anthropic-ratelimit-*` family (`anthropic/limits.py`).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from aiohttp import web

from router.sim.anthropic import errors as anthropic_errors
from router.sim.anthropic.limits import ratelimit_headers
from router.sim.cache import prompt_prefixes
from router.sim.faults import Fault
from router.sim.limits import NO_LIMITS, Admission, LimitState
from router.sim.tokens import content_text, estimate_prompt_tokens
from router.sim.wire_format import (
    ErrorReply,
    FormatName,
    InvalidRequest,
    ModelCall,
    StreamEncoder,
    Usage,
    bearer,
    dumps,
    load_object,
    named_event,
)

_ALPHABET = string.ascii_letters + string.digits


def _anthropic_id(prefix: str) -> str:
    # Real ids look like msg_01XFDUDYJgAACzvnptvVoYEL / req_011CSHoEeqs5C35K2UUqR7Fy.
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def parse_messages_request(body: bytes, request_id: str) -> ModelCall:
    def invalid(message: str) -> InvalidRequest:
        return InvalidRequest(anthropic_errors.invalid_request(message, request_id))

    data = load_object(body)
    if data is None:
        raise invalid("There was an error parsing the body of your request: invalid JSON.")
    model = data.get("model")
    if model is None:
        raise invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise invalid("model: Input should be a valid string")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise invalid("max_tokens: Input should be greater than or equal to 1")
    messages = data.get("messages")
    if messages is None:
        raise invalid("messages: Field required")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: List should have at least 1 item after validation, not 0")
    system = content_text(data.get("system"))
    return ModelCall(
        model=model,
        stream=data.get("stream") is True,
        prompt_tokens=estimate_prompt_tokens(messages, system=system),
        max_tokens=max_tokens,
        # Anthropic caches only when asked: a `cache_control` block (or the top-level one).
        prefixes=prompt_prefixes(messages, system=data.get("system"))
        if body.find(b'"cache_control"') >= 0
        else (),
    )


def parse_count_tokens_request(body: bytes, request_id: str) -> ModelCall:
    """`/v1/messages/count_tokens`: a Messages body without `max_tokens` (none is needed)."""

    def invalid(message: str) -> InvalidRequest:
        return InvalidRequest(anthropic_errors.invalid_request(message, request_id))

    data = load_object(body)
    if data is None:
        raise invalid("There was an error parsing the body of your request: invalid JSON.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise invalid("messages: Field required")
    system = content_text(data.get("system"))
    return ModelCall(
        model=model,
        prompt_tokens=estimate_prompt_tokens(messages, system=system),
        counts_only=True,
    )


def _usage(usage: Usage) -> dict[str, int]:
    # Anthropic's input_tokens leaves out the tokens read from cache and written to it.
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens - usage.written_tokens,
        "cache_creation_input_tokens": usage.written_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def message_body(message_id: str, model: str, text: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _usage(usage),
    }


class MessageStream:
    """The §9.2 event sequence of one message with a single text block."""

    __slots__ = ("_message_id", "_model", "_usage")

    def __init__(self, model: str, usage: Usage) -> None:
        self._message_id = _anthropic_id("msg_01")
        self._model = model
        self._usage = usage

    def opening(self) -> list[bytes]:
        start = message_body(self._message_id, self._model, "", self._usage) | {
            "content": [],
            "stop_reason": None,
            # message_start reports the input and a provisional output count (§9.2).
            "usage": _usage(
                Usage(
                    self._usage.prompt_tokens,
                    1,
                    self._usage.cached_tokens,
                    self._usage.written_tokens,
                )
            ),
        }
        block = {"type": "text", "text": ""}
        return [
            named_event("message_start", {"type": "message_start", "message": start}),
            named_event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
            named_event("ping", {"type": "ping"}),
        ]

    def content(self, piece: str) -> bytes:
        delta = {"type": "text_delta", "text": piece}
        return named_event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )

    def closing(self) -> list[bytes]:
        delta = {"stop_reason": "end_turn", "stop_sequence": None}
        usage = {"output_tokens": self._usage.completion_tokens}
        return [
            named_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            named_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
            named_event("message_stop", {"type": "message_stop"}),
        ]

    def error(self) -> bytes:
        return anthropic_errors.stream_error_event()


class AnthropicMessages:
    name: FormatName = "anthropic"

    def presented_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-api-key") or bearer(request)

    def new_request_id(self) -> str:
        return _anthropic_id("req_011C")

    def unknown_key(self, presented: str | None, request_id: str) -> ErrorReply:
        return anthropic_errors.invalid_api_key(presented, request_id)

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_messages_request(body, request_id)

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"request-id": request_id}

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return ratelimit_headers(state)

    def rate_limited(self, admission: Admission, call: ModelCall, request_id: str) -> ErrorReply:
        return anthropic_errors.rate_limited(admission, request_id)

    def fault_reply(
        self, fault: Fault, call: ModelCall, *, api_key: str, request_id: str, state: LimitState
    ) -> ErrorReply:
        return anthropic_errors.fault_reply(
            fault, model=call.model, request_id=request_id, state=state
        )

    def stream_failure(self, call: ModelCall, request_id: str) -> ErrorReply:
        # The non-streaming twin of the mid-stream overloaded_error (§9.2: "would normally
        # correspond to HTTP 529 in a non-streaming context").
        return anthropic_errors.fault_reply(
            Fault.overloaded(), model=call.model, request_id=request_id, state=NO_LIMITS
        )

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return dumps(message_body(_anthropic_id("msg_01"), call.model, text, usage))

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        return MessageStream(call.model, usage)


class AnthropicCountTokens(AnthropicMessages):
    """`POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the same estimate a
    Messages answer reports as its `usage.input_tokens`. Keys, faults and error bodies
    are Messages'; the key's buckets are not drawn on (`ModelCall.counts_only`)."""

    name: FormatName = "anthropic_count_tokens"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_count_tokens_request(body, request_id)

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return dumps({"input_tokens": usage.prompt_tokens})
