"""Client dialects: what a client-facing API's stream means, and how it says errors.

A stream may fail over until its first content event (provider-signals.md §9.3), so each
dialect names its preamble events, its error events, where its usage is, and the event
that ends a stream properly. It also renders the router's own errors the way that API's
SDK expects them (§11.3): OpenAI's `{"error": {...}}` or Anthropic's
`{"type": "error", "error": {...}}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from router.errors import NoCapacity, RouterError
from router.outcomes import FailureClass, Verdict
from router.rules.failures import classify_response, classify_stream_error
from router.wire import fastjson
from router.wire.usage import cache_counts, tokens, usage_from_body, with_cache


# Not frozen, though nothing changes it: one per usage event of a stream (see
# failover/open_stream.py).
@dataclass(slots=True)
class UsagePart:
    """Token counts one event reported; Anthropic splits them over two events. The
    cache counts are inside `input_tokens` or outside it as the dialect says
    (`cache_outside_input`)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None  # read from the prompt cache
    written_tokens: int | None = None  # written to it


def _json(data: bytes) -> Any:
    """The event's JSON, or None when it has none. Nesting deeper than a request may
    have counts as none: no provider writes it, and re-encoding it would recurse too far."""
    try:
        value = fastjson.loads(data)
    except ValueError:
        return None
    return None if fastjson.too_deep(data, value) else value


# A line of its own starts after one of these bytes (or at the buffer's start) and is
# followed by one: JSON in an event's data holds any text (a model explaining SSE writes
# `data: [DONE]`), but never a raw line end.
_LINE_ENDS = b"\r\n"
_LINE_END = (b"\n", b"\r")


# Text in a delta: certainly not preamble, and by far the most common event, so it is
# recognised from its bytes. In a chunk only `delta.content` is a string-valued
# "content" (logprobs' is a list); an escaped \"content\" inside a string cannot match.
_CONTENT = b'"content":"'


def _has_text(data: bytes) -> bool:
    at = data.find(_CONTENT)
    return at >= 0 and data[at + len(_CONTENT) : at + len(_CONTENT) + 1] not in (b'"', b"")


# The role chunk every OpenAI stream opens with, in the compact form OpenAI and most
# compatible servers write: one choice, a delta of the role and empty content (and
# refusal), no finish reason, no usage object. Anything else is parsed.
_ROLE_DELTA = re.compile(rb'"delta":\{"role":"assistant"(?:,"content":"")?(?:,"refusal":null)?\}')


def _is_role_chunk(data: bytes) -> bool:
    at = data.find(b'"delta":')
    return (
        at >= 0
        and _ROLE_DELTA.match(data, at) is not None
        and data.find(b'"delta":', at + 8) < 0
        and data.find(b'"finish_reason":null') >= 0
        and data.find(b'"usage":{') < 0
        and data.find(b'"error"') < 0
    )


class OpenAIChat:
    """`/v1/chat/completions`: `data:` chunks, `data: {"error": ...}`, `data: [DONE]`."""

    name = "openai"
    terminator = b"data: [DONE]"
    error_hint = b'"error"'
    usage_hint = b'"prompt_tokens"'
    cache_outside_input = False  # OpenAI's input counts include cached tokens

    def ends(self, complete: bytes, at: int) -> bool:
        """Whether the whole events `complete` end the stream, `at` being where the last
        `terminator` in them is (the last event: nothing follows it). It must be a line
        of its own (_LINE_ENDS), since the same text may sit in an event's JSON."""
        return (at == 0 or complete[at - 1] in _LINE_ENDS) and complete.startswith(
            _LINE_END, at + len(self.terminator)
        )

    def is_preamble(self, event: bytes, data: bytes) -> bool:
        """The first chunk carries the role and empty content: nothing to show yet."""
        if _has_text(data):
            return False
        if _is_role_chunk(data):
            return True
        payload = _json(data)
        if not isinstance(payload, dict) or payload.get("error") or payload.get("usage"):
            return False
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            return False
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason"):
                return False
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                return False
            if any(value for name, value in delta.items() if name != "role"):
                return False
        return True

    def content_end(self, buffer: bytes, start: int) -> int:
        """Where the whole event that holds the first text from `start` on ends, found
        from the bytes alone; -1 when the bytes do not make that certain (a CR, anything
        that names an error, text split from its event's end): the events are then read
        one by one. See `read_first_event`. Only the bytes up to that event's end are
        searched for an error or a CR: what follows it is the relay's to read."""
        at = buffer.find(_CONTENT, start)
        while at >= 0:
            if buffer[at + len(_CONTENT) : at + len(_CONTENT) + 1] not in (b'"', b""):
                # Text, on a `data:` line (not inside a comment).
                line = buffer.rfind(b"\n", start, at) + 1 or start  # 0: none, from start
                end = buffer.find(b"\n\n", at)
                if (
                    end < 0
                    or not buffer.startswith(b"data:", line)
                    or buffer.find(b'"error"', start, end) >= 0
                    or buffer.find(b"\r", start, end) >= 0
                ):
                    return -1
                return end + 2
            at = buffer.find(_CONTENT, at + len(_CONTENT))
        return -1

    def error(self, event: bytes, data: bytes) -> Verdict | None:
        if data.find(b'"error"') < 0:
            return None
        payload = _json(data)
        if payload is None:  # names an error, and cannot be read: the upstream is broken
            return Verdict(failure=FailureClass.SERVER_ERROR, message="unreadable error event")
        if isinstance(payload, dict) and payload.get("error"):
            return classify_stream_error(data)
        return None

    def usage(self, event: bytes, data: bytes) -> UsagePart | None:
        if data.find(b'"prompt_tokens"') < 0:  # every other chunk says "usage": null, if at all
            return None
        usage = usage_from_body(data)  # read from the bytes, like a non-streaming answer's
        if usage is None:
            return None
        return UsagePart(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens or None,
            usage.written_tokens or None,
        )

    def error_event(self, message: str, last: bytes = b"") -> bytes:
        """The router's error event; `last`: the whole events most recently sent."""
        body = {"error": {"message": message, "type": "upstream_error", "param": None,
                          "code": "upstream_stream_error"}}  # fmt: skip
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def error_status(self, exc: RouterError) -> int:
        return exc.status

    def error_body(self, exc: RouterError) -> dict[str, Any]:
        return exc.to_body()


class OpenAIResponses(OpenAIChat):
    """`/v1/responses`: named events, `event: error`, ends with `response.completed`, or
    `response.incomplete` when the answer stopped early (the caller's `max_output_tokens`,
    a content filter): a whole answer as asked, with its usage."""

    name = "openai_responses"
    terminator = b"event: response."  # every event's name starts so: `ends` reads which
    error_hint = b"error"  # `event: error` and `response.failed` carry an error object
    # In every event that carries the response object: null but in the last one.
    usage_hint = b'"usage"'
    _LAST = frozenset({b"response.completed", b"response.incomplete"})
    _USAGE = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})
    _PREAMBLE = frozenset(
        {
            b"response.created",
            b"response.in_progress",
            b"response.output_item.added",
            b"response.content_part.added",
        }
    )

    def is_preamble(self, event: bytes, data: bytes) -> bool:
        return event in self._PREAMBLE

    def ends(self, complete: bytes, at: int) -> bool:
        """Whether the last event of `complete` (at `at`) is one that ends the stream."""
        if not (at == 0 or complete[at - 1] in _LINE_ENDS):
            return False
        name = at + 7  # past "event: "
        end = complete.find(b"\n", name)
        return complete[name:end].rstrip(b"\r") in self._LAST

    def content_end(self, buffer: bytes, start: int) -> int:
        return -1  # no shortcut: its events are read one by one

    def error(self, event: bytes, data: bytes) -> Verdict | None:
        if event not in (b"error", b"response.failed"):
            return None
        payload = _json(data)
        if isinstance(payload, dict) and event == b"response.failed":
            response = payload.get("response")
            payload = response.get("error") if isinstance(response, dict) else None
        if not isinstance(payload, dict):
            return classify_response(500, {}, b"")
        return classify_stream_error(json.dumps({"error": payload}).encode())

    def usage(self, event: bytes, data: bytes) -> UsagePart | None:
        if event not in self._USAGE:  # what a response that ended, however, used
            return None
        payload = _json(data)
        response = payload.get("response") if isinstance(payload, dict) else None
        usage = response.get("usage") if isinstance(response, dict) else None
        if not isinstance(usage, dict):
            return None
        input_tokens, output_tokens = (
            tokens(usage.get("input_tokens")),
            tokens(usage.get("output_tokens")),
        )
        if input_tokens is None or output_tokens is None:
            return UsagePart(input_tokens, output_tokens)
        found = with_cache(input_tokens, output_tokens, *cache_counts(usage), outside=False)
        return UsagePart(
            input_tokens, output_tokens, found.cached_tokens or None, found.written_tokens or None
        )

    def error_event(self, message: str, last: bytes = b"") -> bytes:
        """Every Responses event carries a `sequence_number`, and clients that validate
        events (the AI SDK) reject one without it: the router's is the one after the
        last it relayed (found in `last`, the whole events most recently sent; 0 when
        none had one). Numbers are not tracked per event, which would cost a search on
        every chunk of every stream; `last` is searched only when an error is written."""
        body = {"type": "error", "code": "upstream_stream_error", "message": message,
                "param": None, "sequence_number": next_sequence_number(last)}  # fmt: skip
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d{1,18})')


def next_sequence_number(last: bytes) -> int:
    """One past the last `sequence_number` in `last`; 0 when it has none."""
    at = last.rfind(b'"sequence_number"')
    match = _SEQUENCE.match(last, at) if at >= 0 else None
    return int(match.group(1)) + 1 if match is not None else 0


# Anthropic error types by HTTP status (provider-signals.md §4.1).
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicMessages:
    """`/v1/messages`: `event:` + `data:` pairs, `event: error`, ends with `message_stop`."""

    name = "anthropic"
    terminator = b"event: message_stop"
    error_hint = b"event: error"
    usage_hint = b'"usage"'
    cache_outside_input = True  # cache_read/creation_input_tokens are not in input_tokens
    ends = OpenAIChat.ends
    _PREAMBLE = frozenset({b"message_start", b"content_block_start", b"ping"})

    def is_preamble(self, event: bytes, data: bytes) -> bool:
        return event in self._PREAMBLE

    def content_end(self, buffer: bytes, start: int) -> int:
        """As OpenAIChat.content_end: the end of the first whole `content_block_delta`
        event with data, when nothing from `start` to its end holds "error" or a CR."""
        at = buffer.find(b"event: content_block_delta\n", start)
        if at < 0 or (at > start and buffer[at - 1] != 0x0A):  # at a line's start
            return -1
        end = buffer.find(b"\n\n", at)
        if (
            end < 0
            or buffer.find(b"\ndata:", at, end) < 0
            or buffer.find(b"error", start, end) >= 0
            or buffer.find(b"\r", start, end) >= 0
        ):
            return -1
        return end + 2

    def error(self, event: bytes, data: bytes) -> Verdict | None:
        if event != b"error":
            return None
        # The HTTP status is already 200: read the error's type (§9.2).
        return classify_stream_error(data)

    def usage(self, event: bytes, data: bytes) -> UsagePart | None:
        if event not in (b"message_start", b"message_delta"):
            return None
        payload = _json(data)
        if not isinstance(payload, dict):
            return None
        if event == b"message_start":
            message = payload.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                # A zero here is no count: litellm's adapter writes zeros and the real
                # counts in message_delta, so a stream cut between the two used an
                # unknown number of tokens. (Where Anthropic's own says 0 input beside
                # cache counts, the sum is the same: a missing count adds 0.) Its
                # output_tokens is a placeholder (1, or 0), not a count: only
                # message_delta says how many were written.
                return UsagePart(
                    tokens(usage.get("input_tokens")) or None,
                    None,
                    tokens(usage.get("cache_read_input_tokens")) or None,
                    tokens(usage.get("cache_creation_input_tokens")) or None,
                )
        if event == b"message_delta" and isinstance(payload.get("usage"), dict):
            # Current streams (and litellm's adapter, whose message_start says 0) give
            # input_tokens here too; a later value replaces an earlier one.
            usage = payload["usage"]
            return UsagePart(
                tokens(usage.get("input_tokens")) or None,
                tokens(usage.get("output_tokens")),
                tokens(usage.get("cache_read_input_tokens")) or None,
                tokens(usage.get("cache_creation_input_tokens")) or None,
            )
        return None

    def error_event(self, message: str, last: bytes = b"") -> bytes:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"

    def error_status(self, exc: RouterError) -> int:
        # Routes down rather than limited: Anthropic's clients know 529 as "overloaded,
        # come back later" (§11.2), and the SDKs retry it.
        if isinstance(exc, NoCapacity) and not exc.limited:
            return 529
        return exc.status

    def error_body(self, exc: RouterError) -> dict[str, Any]:
        status = self.error_status(exc)
        # "We may also use [invalid_request_error] for other 4XX status codes not listed"
        # (Anthropic's errors page); api_error is theirs for 500.
        kind = ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": exc.message}}


Dialect = OpenAIChat | AnthropicMessages
OPENAI_CHAT = OpenAIChat()
OPENAI_RESPONSES = OpenAIResponses()
ANTHROPIC_MESSAGES = AnthropicMessages()
