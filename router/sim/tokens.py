"""Token estimates for the buckets: ~4 characters per token, plus OpenAI's chat overheads.

Cheap on purpose: only the rate limiter and the `usage` fields use them, and every wire
format counts the same way, so one key's budget means the same thing on every endpoint.
"""

from __future__ import annotations

import json
import math
from typing import Any

# OpenAI's tokenizer overhead per chat message and per reply priming.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def estimate_prompt_tokens(messages: list[dict[str, Any]], *, system: str = "") -> int:
    """Chat-style messages (`content` as a string or a list of parts) plus a system text."""
    total = TOKENS_PER_REPLY + (TOKENS_PER_MESSAGE + estimate_tokens(system) if system else 0)
    for message in messages:
        total += TOKENS_PER_MESSAGE + estimate_tokens(content_text(message.get("content")))
    return total


def content_text(content: Any) -> str:
    """The text of a content value: a string, or parts whose `text` is counted.

    Other parts (images, audio, tool calls) count as their JSON.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else json.dumps(part)
            for part in content
        )
    return json.dumps(content)
