"""Gemini (AI Studio) error replies: Google's `{"error":{code,message,status,details}}`.

Shapes and texts are provider-signals.md §5: a 429 `RESOURCE_EXHAUSTED` names the
exhausted quota in a `google.rpc.QuotaFailure` (a `PerMinute` quota id for a rate limit,
a `PerDay` one for a spent daily quota) and gives the wait only in the body, as a
`google.rpc.RetryInfo.retryDelay` Duration and as "Please retry in Ns." in the message:
Gemini sends no rate-limit or `retry-after` headers at all (§5.1). A bad key is a 400
`INVALID_ARGUMENT` "API key not valid." (§5.2), overload a 503 `UNAVAILABLE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.sim.faults import Fault
from router.sim.limits import Admission
from router.sim.wire_format import ErrorReply, dumps

_TYPE = "type.googleapis.com/google.rpc."
_RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_"
API_KEY_INVALID = "API key not valid. Please pass a valid API key."
OVERLOADED = "The model is overloaded. Please try again later."

# What a scripted quota fault reports: free-tier numbers of the Flash models.
NOMINAL_RPM = 10
NOMINAL_RPD = 250

_SERVER_ERRORS = {
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


@dataclass(frozen=True, slots=True)
class Quota:
    metric: str
    quota_id: str


REQUESTS_PER_MINUTE = Quota(
    _METRIC + "requests", "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
)
REQUESTS_PER_DAY = Quota(_METRIC + "requests", "GenerateRequestsPerDayPerProjectPerModel-FreeTier")
INPUT_TOKENS_PER_MINUTE = Quota(
    _METRIC + "input_token_count", "GenerateContentInputTokensPerModelPerMinute-FreeTier"
)


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> ErrorReply:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return ErrorReply(code, dumps({"error": error}))


def invalid_argument(message: str) -> ErrorReply:
    return google_error(400, "INVALID_ARGUMENT", message)


def invalid_api_key() -> ErrorReply:
    details = [
        {
            "@type": _TYPE + "ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": API_KEY_INVALID},
    ]
    return google_error(400, "INVALID_ARGUMENT", API_KEY_INVALID, details)


def missing_api_key() -> ErrorReply:
    message = (
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    )
    return google_error(403, "PERMISSION_DENIED", message)


def retry_delay(seconds: float) -> str:
    """A protobuf Duration as JSON: decimal seconds, up to 9 fractional digits (§5.1)."""
    return f"{max(0.0, seconds):.9f}".rstrip("0").rstrip(".") + "s"


def quota_exceeded(model: str, quota: Quota, limit: int, retry_after: float | None) -> ErrorReply:
    """The 429 RESOURCE_EXHAUSTED of §5.1; without `retry_after` there is no RetryInfo."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. For "
        f"more information on this error, head to: {_RATE_LIMITS_URL}. To monitor your "
        "current usage, head to: https://ai.dev/usage?tab=rate-limit. \n"
        f"* Quota exceeded for metric: {quota.metric}, limit: {limit}, model: {model}"
    )
    violation = {
        "quotaMetric": quota.metric,
        "quotaId": quota.quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }
    details: list[dict[str, Any]] = [
        {"@type": _TYPE + "QuotaFailure", "violations": [violation]},
        {
            "@type": _TYPE + "Help",
            "links": [
                {"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}
            ],
        },
    ]
    if retry_after is not None:
        delay = retry_delay(retry_after)
        message += f"\nPlease retry in {delay}."
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": delay})
    return google_error(429, "RESOURCE_EXHAUSTED", message, details)


def rate_limited(admission: Admission, model: str) -> ErrorReply:
    """The 429 for a request the key's buckets turned away."""
    if admission.dimension == "requests":
        assert admission.state.requests is not None
        limit, quota = admission.state.requests.limit, REQUESTS_PER_MINUTE
    else:
        assert admission.state.tokens is not None
        limit, quota = admission.state.tokens.limit, INPUT_TOKENS_PER_MINUTE
    # A request larger than the whole per-minute budget will never pass: no RetryInfo.
    wait = None if admission.too_large else admission.wait
    return quota_exceeded(model, quota, limit, wait)


def fault_reply(fault: Fault, *, model: str, api_version: str) -> ErrorReply:
    """The wire form of an error fault (`fault.is_error_reply`)."""
    match fault.kind:
        case "rate_limit":
            return quota_exceeded(model, REQUESTS_PER_MINUTE, NOMINAL_RPM, fault.retry_after)
        case "insufficient_quota":
            # §5.1: a PerDay quota id means hours, not seconds; no RetryInfo.
            return quota_exceeded(model, REQUESTS_PER_DAY, NOMINAL_RPD, None)
        case "auth":
            return invalid_api_key()
        case "server_error":
            status, message = _SERVER_ERRORS.get(fault.status, _SERVER_ERRORS[500])
            return google_error(fault.status, status, message)
        case "overloaded":
            return google_error(503, "UNAVAILABLE", OVERLOADED)
        case "bad_request":
            return invalid_argument(fault.message or "Request contains an invalid argument.")
        case "context_length":
            return invalid_argument(
                "The input token count (1048577) exceeds the maximum number of tokens "
                "allowed (1048576)."
            )
        case "model_not_found":
            message = (
                f"models/{model} is not found for API version {api_version}, or is not "
                "supported for generateContent. Call ListModels to see the list of available "
                "models and their supported methods."
            )
            return google_error(404, "NOT_FOUND", message)
        case _:
            raise ValueError(f"fault {fault.kind!r} is not an error reply")
