"""An upstream's error in the client's API shape, for a route translated through litellm.

A same-format route's error goes back to its client as the provider wrote it. A
translated one was written in the other API's shape: an Anthropic client (Claude Code
on an OpenAI route) got OpenAI's `{"error": {...}}`, an OpenAI client got Anthropic's
`{"type": "error", ...}` (so `e.code` was None, not `context_length_exceeded`). It is
rewritten into the client's shape, with its status and message. A context too long says
so in the words each API's clients look for: Anthropic's "prompt is too long", OpenAI's
code `context_length_exceeded`.
"""

from __future__ import annotations

import json

from router.outcomes import FailureClass
from router.rules.failures import TooDeep, error_fields
from router.wire.dialects import ANTHROPIC_TYPES, Dialect

_TOO_LONG = FailureClass.CONTEXT_TOO_LONG
# OpenAI's error types by HTTP status (provider-signals.md §1).
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error"}  # fmt: skip


def in_client_shape(dialect: Dialect, status: int, body: bytes, failure: FailureClass) -> bytes:
    """`body`, an error answer with `status`, in `dialect`'s shape; the same bytes when
    it is in that shape already, or cannot be read (nested too deep)."""
    try:
        kind, code, message = error_fields(body)
    except TooDeep:
        return body
    message = message or f"the upstream answered {status}"
    try:
        payload = json.loads(body)  # not too deep: error_fields said so
    except (ValueError, UnicodeDecodeError):
        payload = None
    anthropic_shape = isinstance(payload, dict) and payload.get("type") == "error"
    if dialect.name == "anthropic":
        if anthropic_shape and failure is not _TOO_LONG:
            return body
        if failure is _TOO_LONG and not message.lower().startswith("prompt is too long"):
            message = f"prompt is too long: {message}"
        kind = ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    if not anthropic_shape and (failure is not _TOO_LONG or code == "context_length_exceeded"):
        return body  # OpenAI's shape already (litellm writes its own errors so too)
    error = {
        "message": message,
        "type": _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error"),
        "param": None,
        "code": "context_length_exceeded" if failure is _TOO_LONG else (code or None),
    }
    return json.dumps({"error": error}).encode()
