"""Gemini (AI Studio) `generateContent` / `streamGenerateContent` as a `WireFormat`.

`POST /v1beta/models/{model}:generateContent` answers a `GenerateContentResponse`;
`:streamGenerateContent?alt=sse` answers the same objects as SSE, one per word, the last
one (empty text) carrying `finishReason: "STOP"` and the full `usageMetadata`. Google
frames each event `data: <json>\\r\\n\\r\\n` (CRLF): the JS SDK's
`responseLineRE = /^data\\: (.*)(?:\\n\\n|\\r\\r|\\r\\n\\r\\n)/` exists for it, and both
python-genai and litellm read the body line by line (`iter_lines`), stripping `data: `
and skipping blank lines, so they take either line ending. There is no terminator event.
A mid-stream failure is a `data: {"error":{...}}` event, which litellm's
`ModelResponseIterator._check_streaming_error` raises on.

The key comes in `x-goog-api-key` or `?key=`. No rate-limit headers are sent (§5.1).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from aiohttp import web

from router.sim.faults import Fault
from router.sim.gemini import errors as gemini_errors
from router.sim.limits import Admission, LimitState
from router.sim.tokens import content_text, estimate_prompt_tokens
from router.sim.wire_format import (
    ErrorReply,
    FormatName,
    InvalidRequest,
    ModelCall,
    StreamEncoder,
    Usage,
    dumps,
    load_object,
)

_ALPHABET = string.ascii_letters + string.digits


def sse_event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\r\n\r\n"


def parse_generate_request(body: bytes, model: str, *, stream: bool) -> ModelCall:
    data = load_object(body)
    if data is None:
        raise InvalidRequest(gemini_errors.invalid_argument("Invalid JSON payload received."))
    contents = data.get("contents")
    if not contents:
        raise InvalidRequest(
            gemini_errors.invalid_argument(
                "* GenerateContentRequest.contents: contents is not specified\n"
            )
        )
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        raise InvalidRequest(
            gemini_errors.invalid_argument(
                'Invalid JSON payload received. Unknown name "contents": '
                "Proto field is not repeating, cannot start list."
            )
        )
    config = data.get("generationConfig")
    max_tokens = config.get("maxOutputTokens") if isinstance(config, dict) else None
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise InvalidRequest(
            gemini_errors.invalid_argument(
                "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32)"
            )
        )
    system = data.get("systemInstruction")
    system_text = content_text(system.get("parts")) if isinstance(system, dict) else ""
    messages = [{"content": c.get("parts")} for c in contents]
    return ModelCall(
        model=model,
        stream=stream,
        prompt_tokens=estimate_prompt_tokens(messages, system=system_text),
        max_tokens=max_tokens if max_tokens and max_tokens > 0 else None,
    )


def _response(
    response_id: str, model: str, text: str, usage: Usage, *, final: bool
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    metadata = {"promptTokenCount": usage.prompt_tokens, "totalTokenCount": usage.prompt_tokens}
    if final:
        candidate["finishReason"] = "STOP"
        metadata = {
            "promptTokenCount": usage.prompt_tokens,
            "candidatesTokenCount": usage.completion_tokens,
            "totalTokenCount": usage.total_tokens,
        }
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": metadata,
        "modelVersion": model,
        "responseId": response_id,
    }


class GenerateStream:
    """`streamGenerateContent?alt=sse`: one response object per word, then the final one."""

    __slots__ = ("_model", "_response_id", "_usage")

    def __init__(self, response_id: str, model: str, usage: Usage) -> None:
        self._response_id = response_id
        self._model = model
        self._usage = usage

    def opening(self) -> list[bytes]:
        return []

    def content(self, piece: str) -> bytes:
        return sse_event(_response(self._response_id, self._model, piece, self._usage, final=False))

    def closing(self) -> list[bytes]:
        return [sse_event(_response(self._response_id, self._model, "", self._usage, final=True))]

    def error(self) -> bytes:
        return sse_event(
            {"error": {"code": 503, "message": gemini_errors.OVERLOADED, "status": "UNAVAILABLE"}}
        )


class GeminiGenerate:
    """One of `generateContent` (stream False) or `streamGenerateContent` under `version`."""

    name: FormatName = "gemini"

    def __init__(self, version: str, *, stream: bool) -> None:
        self._version = version
        self._stream = stream

    def presented_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key") or None

    def new_request_id(self) -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(22))

    def unknown_key(self, presented: str | None, request_id: str) -> ErrorReply:
        return gemini_errors.invalid_api_key() if presented else gemini_errors.missing_api_key()

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        if self._stream and request.query.get("alt") != "sse":
            # Without alt=sse Google streams one JSON array; the simulator speaks only SSE.
            message = "The simulator serves streamGenerateContent only with ?alt=sse."
            raise InvalidRequest(gemini_errors.invalid_argument(message))
        return parse_generate_request(body, request.match_info["model"], stream=self._stream)

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {}

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return {}  # §5.1: Gemini documents no rate-limit headers.

    def rate_limited(self, admission: Admission, call: ModelCall, request_id: str) -> ErrorReply:
        return gemini_errors.rate_limited(admission, call.model)

    def fault_reply(
        self, fault: Fault, call: ModelCall, *, api_key: str, request_id: str, state: LimitState
    ) -> ErrorReply:
        return gemini_errors.fault_reply(fault, model=call.model, api_version=self._version)

    def stream_failure(self, call: ModelCall, request_id: str) -> ErrorReply:
        return gemini_errors.fault_reply(
            Fault.overloaded(), model=call.model, api_version=self._version
        )

    def body(self, call: ModelCall, text: str, usage: Usage) -> bytes:
        return dumps(_response(self.new_request_id(), call.model, text, usage, final=True))

    def encoder(self, call: ModelCall, text: str, usage: Usage) -> StreamEncoder:
        return GenerateStream(self.new_request_id(), call.model, usage)
