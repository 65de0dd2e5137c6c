"""Token usage from a provider's answer, without parsing the whole body.

OpenAI puts `usage` at the end of a completion and, when asked, in the last chunk of a
stream (provider-signals.md §9.1); Anthropic-style names (`input_tokens`) are read too.
Only the object after the last `"usage"` key is decoded, so the cost does not grow with
the length of the answer. A `"usage"` inside message text is escaped (`\\"usage\\"`)
and cannot match.

The counts are the upstream's word, and are checked like any input: a count that is not
a whole number from 0 to a trillion (a string, a negative, 5,000 digits) is no count.
Nesting too deep to decode is no usage either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_KEY = b'"usage"'
_MOST_TOKENS = 10**12


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


# OpenAI's own compact form, matched where the key is, without scanning:
# "usage":{"prompt_tokens":9,"completion_tokens":12,...}
_OPENAI = re.compile(rb'"usage":\{"prompt_tokens":(\d{1,12}),"completion_tokens":(\d{1,12})(?!\d)')
# The usual shapes, read straight from the bytes: {"prompt_tokens": 9, "completion_tokens": 12}
# (OpenAI) and {"input_tokens": 9, ... "output_tokens": 12} (Anthropic, Responses).
_FAST = re.compile(
    rb'"(?:prompt|input)_tokens"\s*:\s*(\d{1,12})\s*,'
    rb'.*?"(?:completion|output)_tokens"\s*:\s*(\d{1,12})(?!\d)',
    re.DOTALL,
)
_TAIL = 1024  # the usage object sits at the end of an answer


def usage_from_body(body: bytes) -> Usage | None:
    at = body.rfind(_KEY)
    if at < 0:
        return None
    match = _OPENAI.match(body, at) or _FAST.search(body, at, min(len(body), at + _TAIL))
    if match is not None:
        return Usage(input_tokens=int(match.group(1)), output_tokens=int(match.group(2)))
    return _decoded(body, at)


def _decoded(body: bytes, at: int) -> Usage | None:
    """The general case (fields in another order, embeddings' prompt tokens only)."""
    colon = body.find(b":", at + len(_KEY))
    if colon < 0:
        return None
    try:
        value, _ = _DECODER.raw_decode(body[colon + 1 :].decode("utf-8").lstrip())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return _usage(value)


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = tokens(value.get("prompt_tokens", value.get("input_tokens")))
    completion = tokens(value.get("completion_tokens", value.get("output_tokens", 0)))
    if prompt is not None and completion is not None:  # embeddings: no completion, 0
        return Usage(input_tokens=prompt, output_tokens=completion)
    return None


def tokens(value: Any) -> int | None:
    """`value` when it is a plausible token count, else None."""
    if type(value) is int and 0 <= value <= _MOST_TOKENS:  # not a bool, not a float
        return value
    return None
