"""OpenAI Chat Completions wire format: response objects, SSE chunks and response headers.

Shapes follow provider-signals.md §2.1 (rate-limit headers, Go-style durations) and §9.1
(stream framing: `data: <json>\\n\\n` events, no `event:` names, `[DONE]` terminator, the
`include_usage` chunk with `choices: []` just before it).
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from router.sim.limits import DimensionState, LimitState
from router.sim.wire_format import Usage, dumps

SSE_DONE = b"data: [DONE]\n\n"


def new_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


def completion_body(completion_id: str, model: str, content: str, usage: Usage) -> bytes:
    """A non-streaming `chat.completion` object."""
    return dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage.to_dict(),
            # As OpenAI answers when the request names no tier; litellm's groq handler
            # reads the field (and fails when it is missing).
            "service_tier": "default",
            "system_fingerprint": None,
        }
    )


class ChunkWriter:
    """Builds the `data: ...` events of one stream; every event shares id, created, model."""

    __slots__ = ("_head", "_include_usage")

    def __init__(self, completion_id: str, model: str, *, include_usage: bool) -> None:
        created = int(time.time())
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": None,
        }
        self._include_usage = include_usage

    @property
    def include_usage(self) -> bool:
        return self._include_usage

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""}, None)

    def content(self, text: str) -> bytes:
        return self._choice({"content": text}, None)

    def finish(self) -> bytes:
        return self._choice({}, "stop")

    def usage(self, usage: Usage) -> bytes:
        # Only sent when the client asked for stream_options.include_usage (§9.1).
        return sse_event(self._head | {"choices": [], "usage": usage.to_dict()})

    def _choice(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        chunk = self._head | {
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ]
        }
        if self._include_usage:
            chunk["usage"] = None
        return sse_event(chunk)


def sse_event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String at millisecond resolution: 12ms, 1s, 6m0s, 2m59.56s."""
    total_ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs = _trim(rest_ms / 1000)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def try_again_text(seconds: float) -> str:
    """The wait as OpenAI writes it in 429 messages: `84ms`, `1.146s`, `2s` (§2.2)."""
    total_ms = max(1, math.ceil(seconds * 1000 - 1e-6))
    if total_ms < 1000:
        return f"{total_ms}ms"
    return f"{_trim(total_ms / 1000)}s"


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def retry_after_headers(seconds: float) -> dict[str, str]:
    """`retry-after` in whole seconds (rounded up) and the exact `retry-after-ms` (§10)."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    return {"retry-after": str(math.ceil(ms / 1000)), "retry-after-ms": str(ms)}


def ratelimit_headers(state: LimitState) -> dict[str, str]:
    headers: dict[str, str] = {}
    if state.requests is not None:
        _add_dimension(headers, "requests", state.requests)
    if state.tokens is not None:
        _add_dimension(headers, "tokens", state.tokens)
    return headers


def _add_dimension(headers: dict[str, str], name: str, dim: DimensionState) -> None:
    headers[f"x-ratelimit-limit-{name}"] = str(dim.limit)
    headers[f"x-ratelimit-remaining-{name}"] = str(dim.remaining)
    headers[f"x-ratelimit-reset-{name}"] = go_duration(dim.reset_seconds)


def models_list(models: tuple[str, ...]) -> bytes:
    return dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
                for m in models
            ],
        }
    )
