"""OpenAI chat completions from providers that speak something else, through litellm.

The client's chat-completions body goes to `litellm.acompletion` (which speaks Anthropic
Messages, Gemini generateContent and the rest); its answer comes back as the bytes an
OpenAI client expects: a `chat.completion` object, or `data: {chunk}` events ending with
a usage chunk (`choices: []`, as `stream_options.include_usage` gives) and `data: [DONE]`
(provider-signals.md §9.1). litellm's objects carry extra provider fields; only the
OpenAI ones are written, so the answer has the same shape whichever provider served it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from router.types import Operation, Route
from router.upstream.translate import runtime
from router.upstream.translate.endpoints import call_arguments
from router.upstream.translate.litellm_calls import (
    OpenedStream,
    complete,
    open_stream,
)
from router.upstream.translate.litellm_errors import stream_failure
from router.upstream.translate.litellm_internals import hidden_headers
from router.upstream.translate.translated import (
    EventStream,
    TranslatedAnswer,
    carried_headers,
    json_bytes,
)

# The request fields passed on. Anything else in the body is left out, so that a client
# cannot set litellm's own arguments (api_base, api_key, ...) through its request.
CHAT_FIELDS = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
_MESSAGE_FIELDS = ("role", "content", "refusal", "tool_calls", "function_call", "reasoning_content")
_JSON = "application/json"
_SSE = "text/event-stream"


class OpenAIChatTranslator:
    """Operation.CHAT onto any litellm provider (`anthropic`, `gemini`, `mistral`, ...)."""

    async def send(
        self,
        route: Route,
        operation: Operation,
        payload: dict[str, Any],
        *,
        stream: bool,
        head_timeout: float,
    ) -> TranslatedAnswer | EventStream:
        wrong = shape_error(payload)
        if wrong is not None:
            # litellm would fail on it with an error that looks like its own, or like a
            # connection's (a 500, which counts against the route and opens its circuit).
            param, message = wrong
            return _invalid_request(route, message, param)
        lib = await runtime.load()
        arguments = {
            **{name: value for name, value in payload.items() if name in CHAT_FIELDS},
            **call_arguments(route, timeout=head_timeout),
            "stream": stream,
        }
        if not stream:
            result = await complete(lib, route, arguments, head_timeout)
            if isinstance(result, TranslatedAnswer):
                return result
            body = json_bytes(completion_object(result))
            return TranslatedAnswer(
                route.id, 200, carried_headers(hidden_headers(result), _JSON), body
            )
        # Usage is asked for always: metrics and costs need it; the relay drops the
        # chunk when the client did not ask for it.
        arguments["stream_options"] = {"include_usage": True}
        opened = await open_stream(lib, route, arguments, head_timeout)
        if isinstance(opened, TranslatedAnswer):
            return opened
        return EventStream(
            route.id,
            carried_headers(hidden_headers(opened.stream), _SSE),
            chunk_events(opened),
            opened.aclose,
            functools.partial(stream_failure, route.id, secret=route.key.api_key),
        )


async def chunk_events(opened: OpenedStream) -> AsyncIterator[bytes]:
    """litellm's chunks as OpenAI `data:` events; usage goes last, in its own chunk."""
    usage: dict[str, Any] | None = None
    last: Any = opened.first
    async for chunk in opened.chunks():
        last = chunk
        usage = usage_object(getattr(chunk, "usage", None)) or usage
        choices = [_choice_delta(choice) for choice in chunk.choices or ()]
        choices = [choice for choice in choices if choice is not None]
        if choices:
            yield _event(_chunk_object(chunk, choices, None))
    if usage is not None:
        yield _event(_chunk_object(last, [], usage))
    yield b"data: [DONE]\n\n"


def completion_object(response: Any) -> dict[str, Any]:
    choices = [
        {
            "index": choice.index,
            "message": _message(choice.message),
            "logprobs": None,
            "finish_reason": choice.finish_reason,
        }
        for choice in response.choices
    ]
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "system_fingerprint": getattr(response, "system_fingerprint", None),
        "choices": choices,
        "usage": usage_object(getattr(response, "usage", None)),
    }


def usage_object(usage: Any) -> dict[str, Any] | None:
    if usage is None or getattr(usage, "prompt_tokens", None) is None:
        return None
    prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
    counts: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.total_tokens or prompt + completion,
    }
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    written = getattr(details, "cache_write_tokens", None)  # Anthropic's cache_creation
    if cached or written:
        counts["prompt_tokens_details"] = {"cached_tokens": cached or 0}
        if written:
            counts["prompt_tokens_details"]["cache_write_tokens"] = written
    return counts


def _message(message: Any) -> dict[str, Any]:
    fields = message.model_dump()
    out = {name: fields.get(name) for name in _MESSAGE_FIELDS if fields.get(name) is not None}
    out.setdefault("role", "assistant")
    out.setdefault("content", None)
    return out


def _choice_delta(choice: Any) -> dict[str, Any] | None:
    """A chunk's choice in OpenAI's form; None when it carries nothing (litellm's usage
    chunk comes with an empty delta, which OpenAI sends as `choices: []`)."""
    fields = choice.delta.model_dump(exclude_none=True) if choice.delta is not None else {}
    delta = {name: fields[name] for name in _MESSAGE_FIELDS if name in fields}
    if not delta.get("tool_calls"):
        delta.pop("tool_calls", None)
    if not any(value for name, value in delta.items() if name != "role") and not (
        choice.finish_reason or delta.get("role")
    ):
        return None
    return {
        "index": choice.index,
        "delta": delta,
        "logprobs": None,
        "finish_reason": choice.finish_reason,
    }


def _chunk_object(
    chunk: Any, choices: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": chunk.model,
        "system_fingerprint": getattr(chunk, "system_fingerprint", None),
        "choices": choices,
        "usage": usage,
    }


_NUMBER_FIELDS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_COUNT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")


def shape_error(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(the field, what is wrong) when a chat request's shape is one litellm cannot
    convert: checked here, where it is the caller's 400, not inside litellm."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return "messages", "'messages' must be an array of message objects"
    for at, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            return "messages", f"messages[{at}].role must be a string"
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            return "messages", f"messages[{at}].content must be a string or an array of parts"
        if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
            return "messages", f"messages[{at}].content's parts must be objects"
    for name in _NUMBER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return name, f"'{name}' must be a number"
    for name in _COUNT_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return name, f"'{name}' must be an integer"
    stop = payload.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        return "stop", "'stop' must be a string or an array of strings"
    tools = payload.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)
    ):
        return "tools", "'tools' must be an array of tool objects"
    return None


def _invalid_request(route: Route, message: str, param: str = "messages") -> TranslatedAnswer:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return TranslatedAnswer(route.id, 400, carried_headers({}, _JSON), json_bytes({"error": error}))


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json_bytes(obj) + b"\n\n"
