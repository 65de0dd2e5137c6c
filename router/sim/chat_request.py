"""Parse a `POST /v1/chat/completions` body into the few facts the simulator needs.

Validation failures raise `InvalidChatRequest` carrying the 400 body OpenAI sends for that
mistake, so the router sees the same caller-fault signal it would see upstream.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from router.sim import openai_errors
from router.sim.openai_errors import ErrorReply

# OpenAI's tokenizer overhead per chat message and per reply priming; the text itself is
# estimated at ~4 characters per token. Cheap on purpose: only the buckets use it.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3


class InvalidChatRequest(Exception):
    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    max_tokens: int | None


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidChatRequest(openai_errors.unparsable_json()) from exc
    if not isinstance(data, dict):
        raise InvalidChatRequest(openai_errors.unparsable_json())
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidChatRequest(openai_errors.missing_model())
    messages = data.get("messages")
    if messages is None:
        raise InvalidChatRequest(openai_errors.missing_parameter("messages"))
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidChatRequest(openai_errors.invalid_type("messages", "an array of objects"))
    if not messages:
        raise InvalidChatRequest(openai_errors.too_short("messages"))
    stream = data.get("stream") is True
    options = data.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=estimate_prompt_tokens(messages),
        max_tokens=_max_tokens(data),
    )


def _max_tokens(data: dict[str, Any]) -> int | None:
    # max_completion_tokens replaced max_tokens; a client may send either.
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidChatRequest(openai_errors.invalid_type(name, "an integer"))
        if value < 1:
            raise InvalidChatRequest(openai_errors.below_min(name, value))
        return value
    return None


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = _TOKENS_PER_REPLY
    for message in messages:
        total += _TOKENS_PER_MESSAGE + estimate_tokens(_message_text(message.get("content")))
    return total


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Content parts: count text parts; other parts (images, audio) as their JSON.
        return "".join(
            part["text"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else json.dumps(part)
            for part in content
        )
    return json.dumps(content)
