"""OpenAI error replies: status, `{"error":{message,type,param,code}}` body and headers.

Messages are the real ones quoted in provider-signals.md §2.2/§2.3 so that a classifier
written against real traffic also works here. Keys are never echoed in full (§11.2
AUTH_INVALID: providers that echo keys leak them into logs).
"""

from __future__ import annotations

import dataclasses

from router.sim.faults import Fault
from router.sim.limits import NO_LIMITS, Admission, DimensionState, LimitState
from router.sim.openai.wire import (
    dumps,
    ratelimit_headers,
    retry_after_headers,
    sse_event,
    try_again_text,
)
from router.sim.wire_format import ErrorReply

_ORG = "org-sim"
_LIMITS_URL = "Visit https://platform.openai.com/account/rate-limits to learn more."
_HELP = "help.openai.com"

# What a `Fault.rate_limit` reports for a key the simulator does not limit: OpenAI's
# tier-1 numbers for gpt-4o-mini, so the headers look like a real account's.
NOMINAL_RPM = 500
NOMINAL_TPM = 200_000
_WINDOW = 60.0


def error_object(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _reply(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> ErrorReply:
    body = dumps(error_object(message, type_, param=param, code=code))
    return ErrorReply(status, body, headers or {})


def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> ErrorReply:
    return _reply(400, message, "invalid_request_error", param=param, code=code)


# --- caller mistakes (400) -------------------------------------------------------------


def unrecognized_argument(name: str) -> ErrorReply:
    """What an API that predates a field answers (Azure before 2024-09-01-preview, for
    `stream_options`)."""
    return _invalid(f"Unrecognized request argument supplied: {name}")


def unparsable_json() -> ErrorReply:
    return _invalid(
        "We could not parse the JSON body of your request. (HINT: This likely means you "
        "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
        "but what was sent was not valid JSON. If you have trouble figuring out how to fix "
        f"this, please contact us through our help center at {_HELP}.)"
    )


def missing_model() -> ErrorReply:
    return _invalid("you must provide a model parameter")


def missing_parameter(name: str) -> ErrorReply:
    return _invalid(
        f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def invalid_type(name: str, expected: str) -> ErrorReply:
    return _invalid(
        f"Invalid type for '{name}': expected {expected}.", param=name, code="invalid_type"
    )


def too_short(name: str) -> ErrorReply:
    return _invalid(f"[] is too short - '{name}'", param=name)


def invalid_value(name: str, value: object, allowed: str) -> ErrorReply:
    return _invalid(
        f"Invalid value for '{name}': {value!r}. Supported values are: {allowed}.",
        param=name,
        code="invalid_value",
    )


def below_min(name: str, value: int) -> ErrorReply:
    return _invalid(
        f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
        f"{value} instead.",
        param=name,
        code="integer_below_min_value",
    )


# --- credentials ------------------------------------------------------------------------


def mask_key(api_key: str) -> str:
    """`sk-...abcd`: 3 leading and 4 trailing characters; a short key shows no tail."""
    head = api_key[:3] if len(api_key) >= 8 else ""
    tail = api_key[-4:] if len(api_key) >= 16 else "****"
    return f"{head}...{tail}"


def invalid_api_key(presented: str | None) -> ErrorReply:
    if not presented:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
            "or as the password field (with blank username) if you're accessing the API "
            "from your browser and are prompted for a username and password. You can obtain "
            "an API key from https://platform.openai.com/account/api-keys."
        )
    else:
        message = (
            f"Incorrect API key provided: {mask_key(presented)}. You can find your API key "
            "at https://platform.openai.com/account/api-keys."
        )
    return _reply(401, message, "invalid_request_error", code="invalid_api_key")


# --- honest rate limits (§2.2) ------------------------------------------------------------


def rate_limited(admission: Admission, model: str) -> ErrorReply:
    """The 429 for a request the buckets turned away, with the wait as header and text."""
    headers = ratelimit_headers(admission.state)
    dim = admission.state.tokens if admission.dimension == "tokens" else admission.state.requests
    assert dim is not None and admission.dimension is not None
    if admission.too_large:
        # Not transient: this request can never fit, so there is no retry hint at all.
        message = (
            f"Request too large for {model} in organization {_ORG} on tokens per min (TPM): "
            f"Limit {dim.limit}, Requested {admission.requested}. The input or output tokens "
            f"must be reduced in order to run successfully. {_LIMITS_URL}"
        )
        return _reply(429, message, "tokens", code="rate_limit_exceeded", headers=headers)
    headers |= retry_after_headers(admission.wait)
    message = _rate_limit_message(
        model, admission.dimension, dim.limit, dim.limit - dim.remaining, admission.requested
    )
    message += f" Please try again in {try_again_text(admission.wait)}. {_LIMITS_URL}"
    return _reply(429, message, admission.dimension, code="rate_limit_exceeded", headers=headers)


def _rate_limit_message(model: str, dimension: str, limit: int, used: int, requested: int) -> str:
    per_min = "requests per min (RPM)" if dimension == "requests" else "tokens per min (TPM)"
    return (
        f"Rate limit reached for {model} in organization {_ORG} on {per_min}: "
        f"Limit {limit}, Used {used}, Requested {requested}."
    )


# --- scripted faults ----------------------------------------------------------------------


def fault_reply(
    fault: Fault, *, model: str, api_key: str, request_id: str, state: LimitState = NO_LIMITS
) -> ErrorReply:
    """The wire form of an error fault (`fault.is_error_reply`)."""
    headers = ratelimit_headers(state)
    match fault.kind:
        case "rate_limit":
            return _fault_rate_limit(fault, model, state)
        case "insufficient_quota":
            message = (
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            code = "insufficient_quota"
            return _reply(429, message, code, code=code, headers=headers)
        case "auth":
            return dataclasses.replace(invalid_api_key(api_key), headers=headers)
        case "server_error":
            message = (
                "The server had an error processing your request. Sorry about that! You can "
                f"retry your request, or contact us through our help center at {_HELP} if you "
                f"keep seeing this error. (Please include the request ID {request_id} in your "
                "email.)"
            )
            return _reply(fault.status, message, "server_error", headers=headers)
        case "overloaded":
            message = (
                "That model is currently overloaded with other requests. You can retry your "
                f"request, or contact us through our help center at {_HELP} if the error "
                f"persists. (Please include the request ID {request_id} in your message.)"
            )
            return _reply(503, message, "server_error", headers=headers)
        case "bad_request":
            reply = _invalid(fault.message or "", param=fault.param, code=fault.code)
            return dataclasses.replace(reply, headers=headers)
        case "context_length":
            message = (
                "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens. Please reduce the length of the messages."
            )
            reply = _invalid(message, param="messages", code="context_length_exceeded")
            return dataclasses.replace(reply, headers=headers)
        case "model_not_found":
            message = f"The model `{model}` does not exist or you do not have access to it."
            type_ = "invalid_request_error"
            return _reply(404, message, type_, code="model_not_found", headers=headers)
        case _:
            raise ValueError(f"fault {fault.kind!r} is not an error reply")


def _fault_rate_limit(fault: Fault, model: str, state: LimitState) -> ErrorReply:
    # The request bucket is reported empty; an unlimited key gets nominal numbers so the
    # 429 still carries the x-ratelimit-* family a real OpenAI 429 carries (§2.1).
    limit = state.requests.limit if state.requests is not None else NOMINAL_RPM
    reset = fault.retry_after if fault.retry_after is not None else _WINDOW
    tokens = state.tokens or DimensionState(NOMINAL_TPM, NOMINAL_TPM, 0.0)
    headers = ratelimit_headers(LimitState(DimensionState(limit, 0, reset), tokens))
    message = _rate_limit_message(model, "requests", limit, limit, 1)
    if fault.retry_after is not None:
        message += f" Please try again in {try_again_text(fault.retry_after)}."
        if fault.headers:
            headers |= retry_after_headers(fault.retry_after)
    message += f" {_LIMITS_URL}"
    return _reply(429, message, "requests", code="rate_limit_exceeded", headers=headers)


def stream_error_event() -> bytes:
    """The mid-stream error event the SDK raises APIError on (§9.1: any chunk with `error`)."""
    message = "The server had an error while processing your request. Sorry about that!"
    return sse_event(error_object(message, "server_error"))
