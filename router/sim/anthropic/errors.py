"""Anthropic error replies: `{"type":"error","error":{"type","message"},"request_id"}`.

Statuses and types are provider-signals.md §4.1; the messages are the real ones quoted in
§4.2 (credit balance: a 400, not a 429), §4.4 (context length, bad key) and §9.2 (the
mid-stream `overloaded_error`). Keys are never echoed.
"""

from __future__ import annotations

import math

from router.sim.anthropic.limits import exhausted_requests_headers, ratelimit_headers
from router.sim.faults import Fault
from router.sim.limits import Admission, LimitState
from router.sim.wire_format import ErrorReply, dumps, named_event

_RATE_LIMITS_URL = "https://docs.claude.com/en/api/rate-limits"
_ORG = "00000000-0000-4000-8000-000000000000"
_REDUCE = (
    "You can see the response headers for current usage. Please reduce the prompt length or "
    "the maximum tokens requested, or try again later. You may also contact sales at "
    "https://www.anthropic.com/contact-sales to discuss your options for a rate limit "
    "increase."
)
CREDIT_BALANCE_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
    "Billing to upgrade or purchase credits."
)
_WINDOW = 60.0


def error_reply(
    status: int,
    type_: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> ErrorReply:
    body = {"type": "error", "error": {"type": type_, "message": message}}
    return ErrorReply(status, dumps(body | {"request_id": request_id}), headers or {})


def invalid_request(message: str, request_id: str) -> ErrorReply:
    return error_reply(400, "invalid_request_error", message, request_id)


def invalid_api_key(presented: str | None, request_id: str) -> ErrorReply:
    message = "x-api-key header is required" if not presented else "invalid x-api-key"
    return error_reply(401, "authentication_error", message, request_id)


def retry_after_header(seconds: float) -> dict[str, str]:
    """Anthropic's `retry-after` is whole seconds (§4.3), rounded up so it is never early."""
    return {"retry-after": str(max(0, math.ceil(seconds - 1e-6)))}


def rate_limited(admission: Admission, request_id: str) -> ErrorReply:
    """The 429 for a request the buckets turned away, with `retry-after` and the headers."""
    headers = ratelimit_headers(admission.state)
    dim = admission.state.tokens if admission.dimension == "tokens" else admission.state.requests
    assert dim is not None
    if admission.too_large:
        # This request can never fit the per-minute budget: no retry hint.
        message = (
            f"Number of request tokens has exceeded your per-minute rate limit "
            f"({_RATE_LIMITS_URL}); see the response headers for current usage. {_REDUCE}"
        )
        return error_reply(429, "rate_limit_error", message, request_id, headers)
    per_minute = "requests" if admission.dimension == "requests" else "tokens"
    headers |= retry_after_header(admission.wait)
    return error_reply(
        429, "rate_limit_error", _limit_message(dim.limit, per_minute), request_id, headers
    )


def _limit_message(limit: int, per_minute: str) -> str:
    return (
        f"This request would exceed the rate limit for your organization ({_ORG}) of "
        f"{limit:,} {per_minute} per minute. For details, refer to: {_RATE_LIMITS_URL}. "
        f"{_REDUCE}"
    )


def fault_reply(fault: Fault, *, model: str, request_id: str, state: LimitState) -> ErrorReply:
    """The wire form of an error fault (`fault.is_error_reply`)."""
    headers = ratelimit_headers(state)
    match fault.kind:
        case "rate_limit":
            reset = fault.retry_after if fault.retry_after is not None else _WINDOW
            headers = exhausted_requests_headers(state, reset)
            if fault.retry_after is not None and fault.headers:
                headers |= retry_after_header(fault.retry_after)
            limit = int(headers["anthropic-ratelimit-requests-limit"])
            message = _limit_message(limit, "requests")
            return error_reply(429, "rate_limit_error", message, request_id, headers)
        case "insufficient_quota":
            # §4.2: an empty credit balance is a 400 invalid_request_error, not a 429.
            return error_reply(
                400, "invalid_request_error", CREDIT_BALANCE_TOO_LOW, request_id, headers
            )
        case "auth":
            return error_reply(401, "authentication_error", "invalid x-api-key", request_id)
        case "server_error":
            return error_reply(
                fault.status, "api_error", "Internal server error", request_id, headers
            )
        case "overloaded":
            # §4.1: 529 means the API is short of capacity for every caller.
            return error_reply(529, "overloaded_error", "Overloaded", request_id, headers)
        case "bad_request":
            message = fault.message or "Invalid request."
            return error_reply(400, "invalid_request_error", message, request_id, headers)
        case "context_length":
            message = "prompt is too long: 208000 tokens > 200000 maximum"
            return error_reply(400, "invalid_request_error", message, request_id, headers)
        case "model_not_found":
            return error_reply(404, "not_found_error", f"model: {model}", request_id, headers)
        case _:
            raise ValueError(f"fault {fault.kind!r} is not an error reply")


def stream_error_event() -> bytes:
    """§9.2: the mid-stream error, sent after a 200 when capacity runs out."""
    error = {"type": "overloaded_error", "message": "Overloaded"}
    return named_event("error", {"type": "error", "error": error})
