"""Anthropic Messages from providers that speak OpenAI chat (OpenAI, Azure, ...), via litellm.

litellm ships the adapter its own proxy uses for `/v1/messages` on non-Anthropic
models (`litellm_internals.anthropic_adapter`): `AnthropicAdapter` translates the
request to OpenAI chat (system, text and image blocks, tools and tool results,
stop_sequences, thinking) and the answer back, and `AnthropicStreamWrapper` turns chat
chunks into Anthropic's events (message_start, content_block_start/delta/stop,
message_delta with stop_reason and usage, message_stop; provider-signals.md §9.2).
Those pieces are used here directly rather than through `litellm.anthropic_messages`,
which also runs its proxy's pre-request hooks and interceptors, and whose SSE wrapper
turns a failure into an `event: error` frame: here a failure reaches `EventStream`, which
reports it as the router's error so the relay ends the stream in the client's dialect.

The output usage arrives at the end of a chat stream, and so does the input usage: the
adapter's `message_start` says 0 input tokens and its `message_delta` carries both.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from router.errors import UpstreamProtocolError
from router.types import Operation, Route
from router.upstream.translate import runtime
from router.upstream.translate.betas import without_unsupported_betas
from router.upstream.translate.endpoints import call_arguments
from router.upstream.translate.litellm_calls import (
    OpenedStream,
    complete,
    open_stream,
)
from router.upstream.translate.litellm_errors import stream_failure
from router.upstream.translate.litellm_internals import anthropic_adapter as adapter
from router.upstream.translate.litellm_internals import anthropic_stream_wrapper, hidden_headers
from router.upstream.translate.translated import (
    EventStream,
    TranslatedAnswer,
    carried_headers,
    json_bytes,
)

# The Messages fields the adapter translates (the list litellm's own handler passes it).
# Anything else is left out, so that a client cannot set litellm's own arguments.
MESSAGES_FIELDS = (
    "messages",
    "max_tokens",
    "metadata",
    "stop_sequences",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
    "output_format",
    "output_config",
)
_JSON = "application/json"
_SSE = "text/event-stream"


class AnthropicMessagesTranslator:
    """Operation.MESSAGES onto an OpenAI-format provider (`openai`, `azure`, ...)."""

    async def send(
        self,
        route: Route,
        operation: Operation,
        payload: dict[str, Any],
        *,
        stream: bool,
        head_timeout: float,
    ) -> TranslatedAnswer | EventStream:
        lib = await runtime.load()
        request = messages_request(payload, route)
        try:
            chat, tool_names = adapter().translate_completion_input_params_with_tool_mapping(
                request, custom_llm_provider=route.key.provider
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # The adapter rejects a malformed request before anything is sent.
            return _invalid_request(route, str(exc) or type(exc).__name__)
        if chat is None:
            return _invalid_request(route, "the request could not be translated")
        arguments = {
            **{name: value for name, value in chat.items() if name != "model"},
            **call_arguments(route, timeout=head_timeout),
            "stream": stream,
        }
        if not stream:
            result = await complete(lib, route, arguments, head_timeout)
            if isinstance(result, TranslatedAnswer):
                return result
            message = adapter().translate_completion_output_params(
                result, tool_name_mapping=tool_names
            )
            if message is None:
                raise UpstreamProtocolError(route.id, "the answer could not be translated")
            body = json_bytes(message)
            return TranslatedAnswer(
                route.id, 200, carried_headers(hidden_headers(result), _JSON), body
            )
        arguments["stream_options"] = {"include_usage": True}
        opened = await open_stream(lib, route, arguments, head_timeout)
        if isinstance(opened, TranslatedAnswer):
            return opened
        return EventStream(
            route.id,
            carried_headers(hidden_headers(opened.stream), _SSE),
            message_events(opened, tool_names),
            opened.aclose,
            functools.partial(stream_failure, route.id, secret=route.key.api_key),
        )


def messages_request(payload: dict[str, Any], route: Route) -> dict[str, Any]:
    """The fields litellm's adapter translates, less the betas the route cannot honour."""
    request = {name: payload[name] for name in MESSAGES_FIELDS if name in payload}
    request["model"] = route.model
    return without_unsupported_betas(request)


async def message_events(opened: OpenedStream, tool_names: dict[str, str]) -> AsyncIterator[bytes]:
    events = anthropic_stream_wrapper(
        completion_stream=opened.chunks(),
        model=opened.route.model,
        tool_name_mapping=tool_names,
    )
    async for event in events:
        name = event.get("type", "message") if isinstance(event, dict) else "message"
        yield b"event: " + name.encode() + b"\ndata: " + json_bytes(event) + b"\n\n"


def _invalid_request(route: Route, message: str) -> TranslatedAnswer:
    error = {"type": "invalid_request_error", "message": message[:500]}
    return TranslatedAnswer(
        route.id, 400, carried_headers({}, _JSON), json_bytes({"type": "error", "error": error})
    )
