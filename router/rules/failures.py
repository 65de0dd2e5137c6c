"""Pure: an upstream outcome -> a `Verdict` -> an `Action`.

Everything the failover walk and the health tracker know about provider errors lives in
this module: how the wire reads (`classify_response`, `classify_stream_error`,
`classify_exception`) and what the router does about each class (`ACTIONS`).

The order of the checks follows provider-signals.md §11.1: the provider's error type or
code is read before the status, because the same status means different things (an
empty credit balance is a 429 at OpenAI and a 400 at Anthropic). A failure this module
does not recognise is UNKNOWN, and UNKNOWN is passed to the client, not failed over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from router.errors import (
    LocalResourceError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeout,
)
from router.outcomes import BlockReason, Verdict
from router.outcomes import FailureClass as F
from router.rules.ratelimit import (
    exhausted_reset_in,
    parse_duration,
    parse_headroom,
    retry_after_from_headers,
    retry_after_from_text,
)

# Its `.failure` is FailureClass.OK without the class attribute lookup, which on 3.11
# goes through EnumType.__getattr__'s hook (90 ns; an instance's slot: 15).
OK = Verdict(failure=F.OK)

# §2.2: finer quota codes that newer OpenAI bodies carry next to insufficient_quota.
_QUOTA_CODE_SUFFIXES = ("_spend_limit_exceeded", "_usage_limit_exceeded", "_exhausted")
# Not "exceeded your current quota": Gemini's per-minute 429 says that too (§5.1), and
# OpenAI's quota body already carries insufficient_quota in its type and code.
_QUOTA_TEXT = ("credit balance is too low", "spend limit")
# §11.1 step 7: substrings litellm's exception mapping uses for context overflow.
_CONTEXT_TEXT = (
    "maximum context length",
    "prompt is too long",
    "exceeds the maximum number of tokens allowed",
    "input tokens exceed the configured limit",
    "is longer than the model's context length",
    "exceeds the available context size",
    "`inputs` tokens + `max_new_tokens` must be",
)
_CONTENT_POLICY_CODES = ("content_policy_violation", "content_filter")
_CONTENT_POLICY_TEXT = ("safety system", "content management policy", "content filtering policy")
# Azure answers an empty deployment quota with "retry after 86400 seconds" (§3): a wait
# this long is a quota, not a rate limit.
QUOTA_RETRY_AFTER = 3600.0


class Next(StrEnum):
    """Where the walk goes after an attempt."""

    ANSWER = "answer"  # pass the upstream's answer on, as it is
    NEXT_ROUTE = "next_route"  # try another route (of this model, then its fallbacks)
    CONTEXT_FALLBACK = "context_fallback"  # the model's context_fallback; ANSWER without one
    STOP = "stop"  # end the walk: the router answers 503 itself


class Penalty(StrEnum):
    """What the health tracker does to the route (or its key) that failed."""

    NONE = "none"
    COOLDOWN = "cooldown"  # the route rests for the 429's wait, else 2, 4, 8, ... seconds
    CIRCUIT = "circuit"  # counts toward the route's circuit breaker
    KEY_OUT = "key_out"  # every route of the key out for failover.key_disable
    ROUTE_OUT = "route_out"  # the route out for failover.key_disable: it is misconfigured


@dataclass(frozen=True, slots=True)
class Action:
    next: Next
    penalty: Penalty
    caller_fault: bool = False  # the request's own fault: a 4xx for the client
    # KEY_OUT and ROUTE_OUT: why the key or route is out, as /admin and /metrics say it.
    out_for: BlockReason | None = None
    # When every attempt of a request ends this way, the last answer goes back as it is.
    answer_when_all: bool = False
    # Derived, and stored because they are read on every attempt.
    fails_over: bool = field(init=False)
    counts_as_error: bool = field(init=False)  # lowers the route's weight (its error rate)
    judges_route: bool = field(init=False)  # says anything about the route's health

    def __post_init__(self) -> None:
        if (self.penalty in (Penalty.KEY_OUT, Penalty.ROUTE_OUT)) != (self.out_for is not None):
            raise ValueError("out_for is the reason of a KEY_OUT or ROUTE_OUT, and only of one")
        fails_over = self.next is Next.NEXT_ROUTE
        object.__setattr__(self, "fails_over", fails_over)
        object.__setattr__(self, "counts_as_error", fails_over and self.penalty is not Penalty.NONE)
        object.__setattr__(self, "judges_route", self.next is not Next.STOP)


# One row per failure class; the provider fact that justifies it beside it.
ACTIONS: Mapping[F, Action] = {
    F.OK: Action(Next.ANSWER, Penalty.NONE),
    # 429 with Retry-After, retry-after-ms or "try again in 1.2s"; other keys may have room (§2.1).
    F.RATE_LIMITED: Action(Next.NEXT_ROUTE, Penalty.COOLDOWN),
    # "Request too large ... (TPM)": this request never fits this key's per-minute tokens,
    # a smaller one would, so the key is not at fault; if no key can take it, say so (§2.2).
    F.EXCEEDS_TPM: Action(Next.NEXT_ROUTE, Penalty.NONE, answer_when_all=True),
    # insufficient_quota (OpenAI 429), credit balance too low (Anthropic 400), 402
    # (DeepSeek, Mistral): no request on this key succeeds until someone pays (§2.2, §4.1, §7).
    F.QUOTA: Action(Next.NEXT_ROUTE, Penalty.KEY_OUT, out_for=BlockReason.QUOTA),
    # 401/403, invalid_api_key: the key is wrong everywhere it is used (§11.1).
    F.AUTH: Action(Next.NEXT_ROUTE, Penalty.KEY_OUT, out_for=BlockReason.AUTH),
    # 529 overloaded_error: capacity is short for every caller; rotating keys of the same
    # provider would only burn through them, so the route's breaker counts it (§4.1).
    F.OVERLOADED: Action(Next.NEXT_ROUTE, Penalty.CIRCUIT),
    F.SERVER_ERROR: Action(Next.NEXT_ROUTE, Penalty.CIRCUIT),
    F.TIMEOUT: Action(Next.NEXT_ROUTE, Penalty.CIRCUIT),
    F.CONNECTION: Action(Next.NEXT_ROUTE, Penalty.CIRCUIT),
    # EMFILE, ENFILE, ENOBUFS, EADDRNOTAVAIL, ENOMEM on connect: the router's own limit.
    # No upstream is to blame, and every other route would hit the same limit.
    F.LOCAL_RESOURCE: Action(Next.STOP, Penalty.NONE),
    # 404 model_not_found: the route names a model this upstream does not have (§11.1).
    F.MODEL_NOT_FOUND: Action(
        Next.NEXT_ROUTE, Penalty.ROUTE_OUT, out_for=BlockReason.MISCONFIGURED
    ),
    # A 3xx: the route's api_base has moved (http for https, a path without /v1). No
    # request on it succeeds until the config changes, and following the redirect would
    # send the key wherever the upstream says; the client must not get it either.
    F.REDIRECT: Action(Next.NEXT_ROUTE, Penalty.ROUTE_OUT, out_for=BlockReason.MISCONFIGURED),
    # A 404 for a stored response or a file the request names: kept per account, so a
    # key of another organisation may hold it. No fault of the route's; when no key
    # holds it, the last 404 goes back as it is (previous_response_not_found).
    F.NOT_ON_THIS_KEY: Action(Next.NEXT_ROUTE, Penalty.NONE, answer_when_all=True),
    # The prompt is too long for this model; a model with a larger window may take it.
    F.CONTEXT_TOO_LONG: Action(Next.CONTEXT_FALLBACK, Penalty.NONE, caller_fault=True),
    F.CONTENT_POLICY: Action(Next.ANSWER, Penalty.NONE, caller_fault=True),
    # Any other 4xx: another route would refuse the same request the same way.
    F.BAD_REQUEST: Action(Next.ANSWER, Penalty.NONE, caller_fault=True),
    # Unrecognised: pass it on, never fail over (style.md §4, bifrost's default).
    F.UNKNOWN: Action(Next.ANSWER, Penalty.NONE),
}


class TooDeep(ValueError):
    """JSON nested too deeply for the parser (Python's recursion) to read."""


def _json(body: bytes) -> Any:
    """`json.loads`, with nesting too deep to parse as TooDeep, not a RecursionError."""
    try:
        return json.loads(body)
    except RecursionError:
        raise TooDeep("nested too deeply to parse") from None


def error_fields(body: bytes) -> tuple[str, str, str]:
    """(type, code, message) from an OpenAI-style error body; empty strings when absent.

    Accepts `{"error": {...}}`, the legacy vLLM flat form and a Vertex `[{...}]` array.
    Raises TooDeep for a body nested too deeply to parse.
    """
    try:
        payload: Any = _json(body)
    except TooDeep:
        raise
    except ValueError:
        return "", "", body[:500].decode("utf-8", "replace")
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return "", "", ""
    error = payload.get("error", payload)
    if isinstance(error, str):
        return "", "", error
    if not isinstance(error, dict):
        return "", "", ""
    kind = error.get("type")
    code = error.get("code")
    message = error.get("message")
    return (
        kind if isinstance(kind, str) else "",
        str(code) if code is not None else "",
        message if isinstance(message, str) else "",
    )


def google_details(body: bytes) -> tuple[bool, float | None]:
    """Gemini's 429 details (§5.1): (a per-day quota is spent, RetryInfo's delay).

    `QuotaFailure.violations[].quotaId` naming a PerDay quota will not clear for hours;
    `RetryInfo.retryDelay` ("58s", "1.5s") is when a per-minute one will.
    """
    if body.find(b"type.googleapis.com") < 0:
        return False, None
    try:
        payload: Any = _json(body)
    except (ValueError, UnicodeDecodeError):
        return False, None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    per_day, delay = False, None
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("QuotaFailure"):
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                    per_day = True
        elif kind.endswith("RetryInfo") and isinstance(detail.get("retryDelay"), str):
            delay = parse_duration(detail["retryDelay"])
    return per_day, delay


def _is_quota(status: int, kind: str, code: str, text: str) -> bool:
    if "insufficient_quota" in (kind, code) or kind == "billing_error":
        return True
    if code != "rate_limit_exceeded" and code.endswith(_QUOTA_CODE_SUFFIXES):
        return True
    # DeepSeek, Mistral and OpenRouter say "out of money" with 402 (§7).
    return status == 402 or any(needle in text for needle in _QUOTA_TEXT)


# What a 404 says when it is about something the request named, not the route's model:
# OpenAI's codes, and the messages that start so (OpenAI's "Previous response with id
# 'resp_..' not found.", Anthropic's "File not found: file_..").
_CALLERS_CODES = frozenset({
    "previous_response_not_found", "response_not_found", "file_not_found", "batch_not_found",
    "thread_not_found", "assistant_not_found", "vector_store_not_found", "upload_not_found",
    "conversation_not_found",
})  # fmt: skip
_CALLERS_MESSAGES = ("previous response with id", "response with id", "file not found",
                     "no such file", "file with id", "no such batch")  # fmt: skip


def _callers_resource(body: bytes, code: str, text: str) -> bool:
    """Whether a not-found error is about a resource the request named, not the model.
    Only an API's JSON error says so: any other 404 (a web server's page, a bare "Not
    Found" from a wrong api_base) is the route's."""
    if body.lstrip()[:1] != b"{" or code == "model_not_found":
        return False
    return code in _CALLERS_CODES or text.startswith(_CALLERS_MESSAGES)


def _rate_limit_wait(headers: Mapping[str, str], message: str) -> float | None:
    wait = retry_after_from_headers(headers, now_epoch=time.time())
    if wait is None:
        wait = retry_after_from_text(message)
    if wait is None:
        headroom = parse_headroom(headers)
        wait = exhausted_reset_in(headroom) if headroom else None
    return wait


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
    """Classify a complete upstream HTTP answer (`headers` are case-insensitive)."""
    if 200 <= status < 300:
        if body[:1] == b"{" and body.find(b'"error"', 0, _ERROR_FIRST) < 0:
            return OK  # an API's answer, as nearly always: two searches of its start
        return _classify_success(headers, body)
    if 300 <= status < 400:
        return Verdict(failure=F.REDIRECT, message=_redirect_message(status, headers))
    try:
        kind, code, message = error_fields(body)
    except TooDeep:  # no provider writes such an error: the upstream is broken
        return Verdict(failure=F.SERVER_ERROR, message=_TOO_DEEP)
    text = message.lower()
    if _is_quota(status, kind, code, text):
        return Verdict(failure=F.QUOTA, message=message)
    per_day, retry_delay = google_details(body) if status == 429 else (False, None)
    if per_day:
        return Verdict(failure=F.QUOTA, message=message)
    if status == 401 or code == "invalid_api_key" or kind == "authentication_error":
        return Verdict(failure=F.AUTH, message=message)
    if "incorrect api key" in text or "api key not valid" in text:  # OpenAI; Gemini's is a 400
        return Verdict(failure=F.AUTH, message=message)
    if status == 403 and not (kind or code) and body.lstrip()[:1] not in (b"{", b"["):
        # Not the API's word on the key: a firewall's or a proxy's page (Cloudflare's
        # "Access denied"), about this address or this moment. The key is not taken
        # out for key_disable on it; the breaker judges the route as for a 5xx.
        return Verdict(failure=F.SERVER_ERROR, message=message)
    if status == 403 or kind == "permission_error":
        return Verdict(failure=F.AUTH, message=message)
    # Anthropic names the class in `error.type`, which is all a mid-stream error has (§9.2).
    if status == 429 or code in ("429", "rate_limit_exceeded") or kind == "rate_limit_error":
        if "request too large" in text:
            # §2.2: this one request can never fit this key's TPM; a smaller one would.
            return Verdict(failure=F.EXCEEDS_TPM, message=message)
        wait = retry_delay if retry_delay is not None else _rate_limit_wait(headers, message)
        if wait is not None and wait >= QUOTA_RETRY_AFTER:
            return Verdict(failure=F.QUOTA, retry_after=wait, message=message)
        return Verdict(failure=F.RATE_LIMITED, retry_after=wait, message=message)
    if status == 529 or kind == "overloaded_error" or "overloaded" in text:
        # Capacity is short for every caller, not this key (§4.1, §11.2).
        return Verdict(
            failure=F.OVERLOADED,
            retry_after=retry_after_from_headers(headers, now_epoch=time.time()),
            message=message,
        )
    if code == "context_length_exceeded" or any(needle in text for needle in _CONTEXT_TEXT):
        return Verdict(failure=F.CONTEXT_TOO_LONG, message=message)
    if code in _CONTENT_POLICY_CODES or any(needle in text for needle in _CONTENT_POLICY_TEXT):
        return Verdict(failure=F.CONTENT_POLICY, message=message)
    if status == 404 or code == "model_not_found" or kind == "not_found_error":
        if _callers_resource(body, code, text):
            # A stored response, a file the request named, not on this key's account:
            # the route is fine (it would be out for an hour as misconfigured).
            return Verdict(failure=F.NOT_ON_THIS_KEY, message=message)
        return Verdict(failure=F.MODEL_NOT_FOUND, message=message)
    if status in (408, 504) or kind == "timeout_error":
        return Verdict(failure=F.TIMEOUT, message=message)
    if status == 413 or kind == "request_too_large":  # Anthropic: over the byte limit (§4.1)
        return Verdict(failure=F.CONTEXT_TOO_LONG, message=message)
    if status >= 500 or status == 409:
        # 409 is a transient lock conflict the SDKs retry (§11.1 step 12).
        return Verdict(failure=F.SERVER_ERROR, message=message)
    if 400 <= status < 500:
        return Verdict(failure=F.BAD_REQUEST, message=message)
    return Verdict(failure=F.UNKNOWN, message=message)


_EMPTY = "the upstream answered 200 with an empty body"
_NOT_AN_ANSWER = "the upstream answered 200 with a body that is no API's answer (not JSON)"
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which JSON parsers skip
# An error object first in a 2xx body: `{"error":` after up to this many bytes (a
# pretty-printed one has a newline and indent before it). An answer's own "error"
# field (Responses' `"error": null`) comes after its id.
_ERROR_FIRST = 24
_TOO_DEEP = "the upstream's error body nests too deeply to read"


def _classify_success(headers: Mapping[str, str], body: bytes) -> Verdict:
    """A 2xx whose body does not start as an API's answer does: an empty body, a page
    (a maintenance page, a WAF's, a proxy's, which the SDKs would hand the caller as the
    answer, or fail to parse), or an error object (a gateway's)."""
    if _blank(body):
        # No API answers a request with nothing: the upstream failed to say anything.
        return Verdict(failure=F.SERVER_ERROR, message=_EMPTY)
    start = body.lstrip().removeprefix(_BOM).lstrip()
    if start[:1] not in (b"{", b"["):
        return Verdict(failure=F.SERVER_ERROR, message=_NOT_AN_ANSWER)
    if start.find(b'"error"', 0, _ERROR_FIRST) < 0:
        return OK
    try:
        kind, code, message = error_fields(body)
    except TooDeep:
        return Verdict(failure=F.SERVER_ERROR, message=_TOO_DEEP)
    if not (kind or code or message):
        return OK  # `"error": null` first: no error
    # Classified by the status it names (`"code": 400`), else as the upstream's failure.
    named = int(code) if code.isdigit() and len(code) == 3 else 0
    return classify_response(named if 400 <= named < 600 else 502, headers, body)


def _blank(body: bytes) -> bool:
    """Empty or only whitespace; a real answer starts with `{` (no copy of a large body)."""
    return not body or (body[:1].isspace() and not body.strip())


def _redirect_message(status: int, headers: Mapping[str, str]) -> str:
    """What a log reader needs to fix the route: where it was sent (without the query,
    which could carry a key)."""
    location = headers.get("location", "").partition("?")[0][:200]
    where = f" to {location}" if location else " with no Location"
    return f"the upstream answered {status}, a redirect{where}: check the route's api_base"


def classify_stream_error(payload: bytes) -> Verdict:
    """An error event inside a 200 stream: `data: {"error": {...}}` (§9.1)."""
    try:
        kind, code, message = error_fields(payload)
    except TooDeep:
        return Verdict(failure=F.SERVER_ERROR, message=_TOO_DEEP)
    # The HTTP status is already 200, so read the type; default to a server error.
    status = 429 if code in ("rate_limit_exceeded", "429") else 500
    if kind == "invalid_request_error":
        status = 400
    return (
        classify_response(status, {}, payload)
        if (kind or code or message)
        else Verdict(failure=F.SERVER_ERROR)
    )


def classify_exception(exc: UpstreamError) -> Verdict:
    if isinstance(exc, UpstreamTimeout):
        return Verdict(failure=F.TIMEOUT, message=exc.message)
    if isinstance(exc, LocalResourceError):
        return Verdict(failure=F.LOCAL_RESOURCE, message=exc.message)
    if isinstance(exc, UpstreamConnectionError):
        return Verdict(failure=F.CONNECTION, message=exc.message)
    return Verdict(failure=F.SERVER_ERROR, message=exc.message)
