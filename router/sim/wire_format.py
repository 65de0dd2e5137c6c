"""The contract between the request pipeline (`pipeline.py`) and one wire format.

A `WireFormat` is one provider endpoint's way of speaking: where the key is, what a valid
body is, how an error, a rate-limit header, a reply and a stream look. The pipeline owns
the order of events (authenticate, record, parse, fault or admission, answer) and the
shared state; each wire format only turns semantic facts into that provider's bytes, so a
`Fault.overloaded()` is a 503 on OpenAI, a 529 `overloaded_error` on Anthropic and a 503
`UNAVAILABLE` on Gemini.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

if TYPE_CHECKING:
    from aiohttp import web

    from router.sim.cache import Prefix
    from router.sim.faults import Fault
    from router.sim.limits import Admission, LimitState

_WORD = re.compile(r"\s*\S+|\s+$")

# The names `KeyStats.by_format` counts requests under, one per endpoint family.
FormatName = Literal[
    "openai_chat",
    "openai_embeddings",
    "openai_responses",
    "anthropic",
    "anthropic_count_tokens",
    "azure_chat",
    "azure_embeddings",
    "gemini",
]


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class InvalidRequest(Exception):
    """A body (or query) the provider would refuse; carries the provider's own 4xx."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of prompt_tokens, served from the key's prompt cache
    # Of prompt_tokens, newly written to it (Anthropic reports these; OpenAI does not).
    written_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's `usage` object; other formats rename the fields themselves."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True, slots=True)
class EmbeddingInput:
    """What an embeddings request asks for: the texts (token arrays as their JSON)."""

    texts: tuple[str, ...]
    encoding_format: Literal["float", "base64"]
    dimensions: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCall:
    """The facts of one parsed model request that the pipeline needs.

    `max_tokens` is reserved against the token bucket up front, as OpenAI does
    (provider-signals.md §11.4); without it the reply's own size is charged.
    `embedding` is set for embeddings requests, which generate no text.
    `api_version` is Azure's `api-version` query parameter, quoted in its 429 messages.
    `counts_only`: Anthropic's count_tokens, which generates nothing and, having its own
    limits apart from Messages' (Anthropic's token-counting docs), draws on no bucket.
    """

    model: str
    prompt_tokens: int
    stream: bool = False
    max_tokens: int | None = None
    include_usage: bool = False
    embedding: EmbeddingInput | None = None
    api_version: str | None = None
    counts_only: bool = False
    # The prompt's message boundaries, for the key's prompt cache (sim/cache.py).
    prefixes: tuple[Prefix, ...] = ()

    @property
    def generates(self) -> bool:
        return self.embedding is None and not self.counts_only


class StreamEncoder(Protocol):
    """The SSE events of one answer; `pipeline`/`streams` decide how many get written."""

    def opening(self) -> list[bytes]:
        """Events sent before the first content piece (role chunk, message_start, ...)."""
        ...

    def content(self, piece: str) -> bytes: ...

    def closing(self) -> list[bytes]:
        """Events of a healthy ending, terminator included."""
        ...

    def error(self) -> bytes:
        """The provider's mid-stream error event (`Fault.stream_error`)."""
        ...


class WireFormat(Protocol):
    """One endpoint's wire format. Methods are pure: no state, no I/O."""

    @property
    def name(self) -> FormatName: ...

    def presented_key(self, request: web.Request) -> str | None: ...

    def new_request_id(self) -> str: ...

    def unknown_key(self, presented: str | None, request_id: str) -> ErrorReply: ...

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        """The call, or raise `InvalidRequest` with the provider's 400."""
        ...

    def id_headers(self, request_id: str) -> dict[str, str]:
        """Headers naming the request on every response (`x-request-id`, `request-id`)."""
        ...

    def limit_headers(self, state: LimitState) -> dict[str, str]: ...

    def rate_limited(self, admission: Admission, call: ModelCall, request_id: str) -> ErrorReply:
        """The reply to a request the key's buckets turned away."""
        ...

    def fault_reply(
        self, fault: Fault, call: ModelCall, *, api_key: str, request_id: str, state: LimitState
    ) -> ErrorReply:
        """The wire form of an error fault (`fault.is_error_reply`)."""
        ...

    def stream_failure(self, call: ModelCall, request_id: str) -> ErrorReply:
        """What a non-streaming request gets for `Fault.stream_error`."""
        ...

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes: ...

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder: ...


def dumps(obj: Any) -> bytes:
    """Compact JSON, as the providers write it. orjson: the simulator shares the cores
    with whatever a bench measures, and a stream is one of these per event."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # what orjson does not take (an int past 64 bits, say)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def load_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None if it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def reply_pieces(reply: str) -> list[str]:
    """The reply split one word per chunk, leading space attached as tokens carry it."""
    return _WORD.findall(reply)


def bearer(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer ...` (OpenAI, and Anthropic's SDK), or None."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def named_event(event: str, data: Any) -> bytes:
    """`event: X\\ndata: {...}\\n\\n`, the framing of Anthropic and the Responses API."""
    return f"event: {event}\n".encode() + b"data: " + dumps(data) + b"\n\n"
