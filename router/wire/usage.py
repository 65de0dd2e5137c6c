"""Token usage from a provider's answer, without parsing the whole body.

OpenAI puts `usage` at the end of a completion and, when asked, in the last chunk of a
stream (provider-signals.md §9.1); Anthropic-style names (`input_tokens`) are read too.
Only the object after the last `"usage"` key is decoded, so the cost does not grow with
the length of the answer. A `"usage"` inside message text is escaped (`\\"usage\\"`)
and cannot match.

Prompt-cache counts are read from the same object: OpenAI's `cached_tokens` (in
`prompt_tokens_details`, or `input_tokens_details` on Responses) are part of the input
count; Anthropic's `cache_read_input_tokens` and `cache_creation_input_tokens` are not,
and are added to it (next to `prompt_tokens`, as litellm writes them, they are part of
it). So `Usage.input_tokens` is every input token, whoever reports it, and
`cached_tokens` / `written_tokens` say how many of them the cache served or took.

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


# Not frozen, though nothing changes it: read from every answer (a frozen dataclass's
# __init__ sets each field through object.__setattr__, about 1 us per instance).
@dataclass(slots=True)
class Usage:
    input_tokens: int  # all of them, cache reads and writes included
    # None: not known, the stream was cut before its count came (Anthropic says the
    # input's at the start, the output's at the end).
    output_tokens: int | None
    cached_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    written_tokens: int = 0  # of input_tokens, written to it (Anthropic's cache_creation)


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
# The rest of OpenAI's object as its API writes it, to the object's closing brace:
# ,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0,...}
# then, optionally, ,"completion_tokens_details":{...} and the object's "}".
# Matched whole, the one cache count in it is `cached_tokens` (one search checks for
# another): the usual usage read with no search per cache count.
_OPENAI_REST = re.compile(
    rb',"total_tokens":\d{1,13},"prompt_tokens_details":\{"cached_tokens":(\d{1,12})(?!\d)'
    rb'[^{}]*\}(?:,"completion_tokens_details":\{[^{}]*\})?\}'
)
# The two in one match: the usual usage object read in one call.
_OPENAI_WHOLE = re.compile(_OPENAI.pattern + _OPENAI_REST.pattern)
_TAIL = 1024  # the usage object sits at the end of an answer
_NUMBER = re.compile(rb"\s*:\s*(\d{1,12})(?!\d)")  # after a count's key


def usage_from_body(body: bytes) -> Usage | None:
    at = body.rfind(_KEY)
    if at < 0:
        return None
    match = _OPENAI_WHOLE.match(body, at)
    if match is not None:
        if body.find(b'"cache', match.end(3), match.end()) < 0:
            input_tokens, cached = int(match[1]), int(match[3])
            if cached > input_tokens:  # as with_cache: more cached than input is no count
                return Usage(input_tokens, int(match[2]))
            return Usage(input_tokens, int(match[2]), cached)
    else:
        match = _OPENAI.match(body, at)
    end = at + _TAIL  # past the end is the end, for find() and the regexes
    match = match or _FAST.search(body, at, end)
    if match is not None:
        input_tokens, output_tokens = int(match.group(1)), int(match.group(2))
        first = body.find(b'"cache', at, end)
        if first < 0:  # no cache counts: one bounded search
            return Usage(input_tokens, output_tokens)
        return with_cache(
            input_tokens,
            output_tokens,
            _count(body, b'"cached_tokens"', first, end),
            _count(body, b'"cache_write_tokens"', first, end),
            _count(body, b'"cache_read_input_tokens"', first, end),
            _count(body, b'"cache_creation_input_tokens"', first, end),
            outside=match.re is _FAST and body.startswith(b'"input', match.start()),
        )
    return _decoded(body, at)


def _count(body: bytes, key: bytes, start: int, end: int) -> int | None:
    """The count after `key` in body[start:end], or None."""
    at = body.find(key, start, end)
    if at < 0:
        return None
    number = _NUMBER.match(body, at + len(key), end)
    return int(number.group(1)) if number is not None else None


# A usage object's cache counts: OpenAI's names (`*_tokens_details.cached_tokens`,
# `cache_write_tokens`), then Anthropic's (cache_read/cache_creation_input_tokens).
CacheCounts = tuple[int | None, int | None, int | None, int | None]


def with_cache(
    input_tokens: int,
    output_tokens: int | None,
    cached: int | None = None,
    write: int | None = None,
    read: int | None = None,
    creation: int | None = None,
    *,
    outside: bool,
) -> Usage:
    """Usage from the reported counts. OpenAI's `cached` and `write` are part of the
    input count; Anthropic's `read` and `creation` are not when `outside` (next to
    Anthropic's `input_tokens`), and are (litellm writes them next to `prompt_tokens`,
    mirrored in the OpenAI names). Cache counts above the input count are no counts."""
    if outside and (read is not None or creation is not None):
        read, creation = read or 0, creation or 0
        return Usage(input_tokens + read + creation, output_tokens, read, creation)
    cached = (cached if cached is not None else read) or 0
    written = (write if write is not None else creation) or 0
    if cached + written > input_tokens:
        return Usage(input_tokens, output_tokens)
    return Usage(input_tokens, output_tokens, cached, written)


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
        outside = "prompt_tokens" not in value
        return with_cache(prompt, completion, *cache_counts(value), outside=outside)
    return None


def cache_counts(usage: dict[str, Any]) -> CacheCounts:
    """A decoded usage object's cache counts, in `with_cache`'s order."""
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    if not isinstance(details, dict):
        details = {}
    return (
        tokens(details.get("cached_tokens")),
        tokens(details.get("cache_write_tokens")),
        tokens(usage.get("cache_read_input_tokens")),
        tokens(usage.get("cache_creation_input_tokens")),
    )


def tokens(value: Any) -> int | None:
    """`value` when it is a plausible token count, else None."""
    if type(value) is int and 0 <= value <= _MOST_TOKENS:  # not a bool, not a float
        return value
    return None
