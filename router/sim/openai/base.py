"""OpenAI's `/v1/chat/completions` and `/v1/embeddings` as `Dialect`s.

Both take the key as `Authorization: Bearer`, name each response with `x-request-id`,
send the `x-ratelimit-*` family (provider-signals.md §2.1) and the error bodies of
`openai/errors.py` (§2.2, §2.3). `OpenAIDialect` holds what they share; the Responses API
(`openai/responses.py`) and Azure (`openai/azure.py`) build on it too.
"""

from __future__ import annotations

from aiohttp import web

from router.sim.dialect import ErrorReply, FormatName, ModelCall, StreamEncoder, Usage
from router.sim.faults import Fault
from router.sim.limits import Admission, LimitState
from router.sim.openai import errors as openai_errors
from router.sim.openai.chat import parse_chat_request
from router.sim.openai.embeddings import embeddings_body, parse_embeddings_request
from router.sim.openai.wire import (
    SSE_DONE,
    ChunkWriter,
    completion_body,
    new_completion_id,
    new_request_id,
    ratelimit_headers,
)


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class OpenAIDialect:
    """Bearer keys, `x-request-id`, `x-ratelimit-*` and OpenAI error bodies."""

    name: FormatName

    def presented_key(self, request: web.Request) -> str | None:
        return bearer(request)

    def unknown_key(self, presented: str | None, request_id: str) -> ErrorReply:
        return openai_errors.invalid_api_key(presented)

    def new_request_id(self) -> str:
        return new_request_id()

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": request_id}

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return ratelimit_headers(state)

    def rate_limited(self, admission: Admission, call: ModelCall, request_id: str) -> ErrorReply:
        return openai_errors.rate_limited(admission, call.model)

    def fault_reply(
        self, fault: Fault, call: ModelCall, *, api_key: str, request_id: str, state: LimitState
    ) -> ErrorReply:
        return openai_errors.fault_reply(
            fault, model=call.model, api_key=api_key, request_id=request_id, state=state
        )

    def stream_failure(self, call: ModelCall, request_id: str) -> ErrorReply:
        # The nearest non-streaming equivalent of a failure mid-generation.
        return openai_errors.fault_reply(
            Fault.server_error(500), model=call.model, api_key="", request_id=request_id
        )


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


class OpenAIChat(OpenAIDialect):
    name: FormatName = "openai_chat"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_chat_request(body)

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return completion_body(new_completion_id(), call.model, text, usage)

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        return ChatStream(call, usage)


class OpenAIEmbeddings(OpenAIDialect):
    name: FormatName = "openai_embeddings"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        return parse_embeddings_request(body)

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return embeddings_body(call, usage)

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        raise TypeError("embeddings are never streamed")
