"""OpenAI Chat Completions (`POST /v1/chat/completions`) as a `WireFormat`.

The body is parsed into the few facts the simulator needs. Validation failures raise
`InvalidRequest` carrying the 400 body OpenAI sends for that mistake, so the router sees
the same caller-fault signal it would see upstream. Azure's deployments endpoint takes the
same body, except that the deployment names the model. Replies and chunks are built in
`openai/wire.py`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.sim.cache import prompt_prefixes
from router.sim.openai import errors as openai_errors
from router.sim.openai.base import OpenAIWireFormat
from router.sim.openai.wire import SSE_DONE, ChunkWriter, completion_body, new_completion_id
from router.sim.tokens import estimate_prompt_tokens
from router.sim.wire_format import (
    FormatName,
    InvalidRequest,
    ModelCall,
    StreamEncoder,
    Usage,
    load_object,
)


def object_with_model(body: bytes, deployment: str | None) -> tuple[dict[str, Any], str]:
    """The body as a JSON object and the model it names (an Azure deployment names it
    instead), or the InvalidRequest OpenAI answers a body without them with."""
    data = load_object(body)
    if data is None:
        raise InvalidRequest(openai_errors.unparsable_json())
    model = deployment or data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(openai_errors.missing_model())
    return data, model


def parse_chat_request(body: bytes, *, deployment: str | None = None) -> ModelCall:
    data, model = object_with_model(body, deployment)
    messages = data.get("messages")
    if messages is None:
        raise InvalidRequest(openai_errors.missing_parameter("messages"))
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest(openai_errors.invalid_type("messages", "an array of objects"))
    if not messages:
        raise InvalidRequest(openai_errors.too_short("messages"))
    check_tools(data.get("tools"))
    stream = data.get("stream") is True
    options = data.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return ModelCall(
        model=model,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=estimate_prompt_tokens(messages),
        max_tokens=positive_int(data, ("max_completion_tokens", "max_tokens")),
        prefixes=prompt_prefixes(messages),
    )


def check_tools(tools: Any) -> None:
    """OpenAI takes `function` and `custom` tools only: another provider's tool types
    (Anthropic's `web_search_20250305`, say) are refused, naming the first."""
    if tools is None:
        return
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise InvalidRequest(openai_errors.invalid_type("tools", "an array of objects"))
    if not tools:
        raise InvalidRequest(openai_errors.too_short("tools"))
    for at, tool in enumerate(tools):
        if tool.get("type") not in ("function", "custom"):
            allowed = "'function' and 'custom'"
            raise InvalidRequest(
                openai_errors.invalid_value(f"tools[{at}].type", tool.get("type"), allowed)
            )


def positive_int(data: dict[str, Any], names: tuple[str, ...]) -> int | None:
    """The first of `names` present, validated as OpenAI does (an integer >= 1)."""
    # max_completion_tokens replaced max_tokens; a client may send either.
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(openai_errors.invalid_type(name, "an integer"))
        if value < 1:
            raise InvalidRequest(openai_errors.below_min(name, value))
        return value
    return None


class ChatStream:
    """Chat Completions SSE (§9.1): role chunk, one chunk per word, finish, [DONE]."""

    __slots__ = ("_chunks", "_usage")

    def __init__(self, call: ModelCall, usage: Usage) -> None:
        self._chunks = ChunkWriter(
            new_completion_id(), call.model, include_usage=call.include_usage
        )
        self._usage = usage

    def opening(self) -> list[bytes]:
        return [self._chunks.role()]

    def content(self, piece: str) -> bytes:
        return self._chunks.content(piece)

    def closing(self) -> list[bytes]:
        events = [self._chunks.finish()]
        if self._chunks.include_usage:
            events.append(self._chunks.usage(self._usage))
        return [*events, SSE_DONE]

    def error(self) -> bytes:
        return openai_errors.stream_error_event()


class OpenAIChat(OpenAIWireFormat):
    name: FormatName = "openai_chat"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_chat_request(body)

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return completion_body(new_completion_id(), call.model, text, usage)

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        return ChatStream(call, usage)
