"""The classifier, case by case, with bodies from provider-signals.md."""

from __future__ import annotations

import errno
import json
import os
import random

import pytest

from router.outcomes import FailureClass, Headroom
from router.outcomes import FailureClass as F
from router.rules.failures import (
    ACTIONS,
    Next,
    Penalty,
    classify_exception,
    classify_response,
    classify_stream_error,
    error_fields,
)
from router.rules.ratelimit import (
    _USUAL_HEADROOM,
    MAX_WAIT,
    _count,
    parse_anthropic_headroom,
    parse_duration,
    parse_headroom,
    retry_after_from_text,
)
from router.upstream import _mapped


def nested_error(depth: int) -> bytes:
    return b'{"error":' + b"[" * depth + b"]" * depth + b"}"


def openai_error(message: str, kind: str | None, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()


RATE_LIMIT = openai_error(
    "Rate limit reached for gpt-4o-mini in project proj_x organization org-x on tokens per min "
    "(TPM): Limit 50000, Used 47949, Requested 3006. Please try again in 1.146s. Visit "
    "https://platform.openai.com/account/rate-limits to learn more.",
    "tokens",
    "rate_limit_exceeded",
)
QUOTA = openai_error(
    "You exceeded your current quota, please check your plan and billing details.",
    "insufficient_quota",
    "insufficient_quota",
)
TOO_LARGE = openai_error(
    "Request too large for gpt-4o in organization org-xxx on tokens per min (TPM): Limit 30000, "
    "Requested 34307.",
    "tokens",
    "rate_limit_exceeded",
)
AZURE_429 = json.dumps(
    {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
            "version 2024-02-15-preview have exceeded token rate limit of your current OpenAI S0 "
            "pricing tier. Please retry after 6 seconds.",
        }
    }
).encode()
AZURE_QUOTA = AZURE_429.replace(b"6 seconds", b"86400 seconds")
ANTHROPIC_CREDIT = json.dumps(
    {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Your credit balance is too low to access the Anthropic API.",
        },
    }
).encode()
GEMINI_PER_MINUTE = json.dumps(
    {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing "
            "details. Please retry in 58.934310785s.",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
).encode()


def gemini_429(quota_id: str, retry_delay: str | None) -> bytes:
    details: list[dict] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "m", "quotaId": quota_id}],
        }
    ]
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": retry_delay})  # fmt: skip
    error = {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": details}
    return json.dumps({"error": error}).encode()


GEMINI_RETRY_INFO = gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "26s")
GEMINI_PER_DAY = gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", None)


@pytest.mark.parametrize(
    ("status", "headers", "body", "failure", "retry_after"),
    [
        pytest.param(200, {}, b"{}", F.OK, None, id="ok"),
        pytest.param(429, {}, RATE_LIMIT, F.RATE_LIMITED, 1.146, id="openai-429-wait-in-text"),
        pytest.param(
            429,
            {"retry-after-ms": "2500", "retry-after": "9"},
            RATE_LIMIT,
            F.RATE_LIMITED,
            2.5,
            id="retry-after-ms-wins",
        ),
        pytest.param(429, {"retry-after": "7"}, b"{}", F.RATE_LIMITED, 7.0, id="retry-after"),
        pytest.param(
            429,
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
            openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
            F.RATE_LIMITED,
            360.0,
            id="reset-header-of-exhausted-dimension",
        ),
        pytest.param(429, {}, b"", F.RATE_LIMITED, None, id="429-without-any-hint"),
        pytest.param(429, {}, QUOTA, F.QUOTA, None, id="openai-insufficient-quota"),
        pytest.param(
            429,
            {},
            openai_error("limit", "insufficient_quota", "project_spend_limit_exceeded"),
            F.QUOTA,
            None,
            id="openai-spend-limit-code",
        ),
        pytest.param(429, {}, TOO_LARGE, F.EXCEEDS_TPM, None, id="request-too-large-for-tpm"),
        pytest.param(429, {}, AZURE_429, F.RATE_LIMITED, 6.0, id="azure-429-string-code"),
        pytest.param(429, {}, AZURE_QUOTA, F.QUOTA, 86400.0, id="azure-86400s-is-quota"),
        pytest.param(429, {}, GEMINI_PER_MINUTE, F.RATE_LIMITED, 58.934310785, id="gemini-minute"),
        pytest.param(429, {}, GEMINI_RETRY_INFO, F.RATE_LIMITED, 26.0, id="gemini-retryinfo"),
        pytest.param(429, {}, GEMINI_PER_DAY, F.QUOTA, None, id="gemini-per-day-quota"),
        pytest.param(400, {}, ANTHROPIC_CREDIT, F.QUOTA, None, id="anthropic-credit-400"),
        pytest.param(402, {}, b'{"error":"Insufficient Balance"}', F.QUOTA, None, id="402"),
        pytest.param(
            401,
            {},
            openai_error(
                "Incorrect API key provided: sk-...abcd.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            F.AUTH,
            None,
            id="openai-401",
        ),
        pytest.param(403, {}, b"{}", F.AUTH, None, id="403"),
        pytest.param(529, {}, b"{}", F.OVERLOADED, None, id="anthropic-529"),
        pytest.param(
            503,
            {},
            openai_error("The engine is currently overloaded", "server_error", None),
            F.OVERLOADED,
            None,
            id="openai-503-overloaded",
        ),
        pytest.param(
            400,
            {},
            openai_error(
                "This model's maximum context length is 8192 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            F.CONTEXT_TOO_LONG,
            None,
            id="context-length",
        ),
        pytest.param(
            400,
            {},
            openai_error("x", "invalid_request_error", "content_policy_violation"),
            F.CONTENT_POLICY,
            None,
            id="content-policy",
        ),
        pytest.param(
            404,
            {},
            openai_error("no", "invalid_request_error", "model_not_found"),
            F.MODEL_NOT_FOUND,
            None,
            id="model-not-found",
        ),
        pytest.param(
            404,
            {},
            openai_error("The model `gpt-9` does not exist", "invalid_request_error", None),
            F.MODEL_NOT_FOUND,
            None,
            id="model-does-not-exist",
        ),
        pytest.param(404, {}, b"404 page not found", F.MODEL_NOT_FOUND, None, id="wrong-path"),
        pytest.param(
            404,
            {},
            b"<title>404 - File or directory not found.</title>",
            F.MODEL_NOT_FOUND,
            None,
            id="iis-page",
        ),
        pytest.param(
            404,
            {},
            b"<p>Message: File not found.</p>",
            F.MODEL_NOT_FOUND,
            None,
            id="http-server-page",
        ),
        pytest.param(
            404,
            {},
            b'{"error":{"code":"resource_not_found","message":"Not found"}}',
            F.MODEL_NOT_FOUND,
            None,
            id="azure-resource",
        ),
        pytest.param(
            404,
            {},
            openai_error(
                "Previous response with id 'resp_1' not found.",
                "invalid_request_error",
                "previous_response_not_found",
            ),
            F.NOT_ON_THIS_KEY,
            None,
            id="previous-response-is-not-on-this-key",
        ),
        pytest.param(
            404,
            {},
            b'{"type":"error","error":{"type":"not_found_error","message":"File not found"}}',
            F.NOT_ON_THIS_KEY,
            None,
            id="anthropic-file-is-not-on-this-key",
        ),
        pytest.param(
            404,
            {},
            b'{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}',
            F.MODEL_NOT_FOUND,
            None,
            id="anthropic-model",
        ),
        pytest.param(500, {}, b"<html>oops</html>", F.SERVER_ERROR, None, id="500-html"),
        pytest.param(502, {}, b"", F.SERVER_ERROR, None, id="502-empty"),
        pytest.param(504, {}, b"", F.TIMEOUT, None, id="504"),
        pytest.param(
            400,
            {},
            openai_error("bad temperature", "invalid_request_error", None),
            F.BAD_REQUEST,
            None,
            id="plain-400-is-the-callers",
        ),
        pytest.param(422, {}, b"{}", F.BAD_REQUEST, None, id="422"),
        pytest.param(302, {}, b"", F.REDIRECT, None, id="redirect-is-a-misconfigured-route"),
        pytest.param(301, {"location": "https://x/v1"}, b"", F.REDIRECT, None, id="moved"),
        pytest.param(200, {}, b"", F.SERVER_ERROR, None, id="empty-200"),
        pytest.param(200, {}, b"<html>busy</html>", F.SERVER_ERROR, None, id="html-200"),
        pytest.param(403, {}, b"<html>Access denied</html>", F.SERVER_ERROR, None, id="waf-403"),
        pytest.param(
            403,
            {},
            openai_error("not allowed", "invalid_request_error", None),
            F.AUTH,
            None,
            id="api-403",
        ),
        pytest.param(200, {}, b'{"id":"resp_1","error":null}', F.OK, None, id="error-null"),
        pytest.param(200, {}, b' {"error": null, "id": "x"}', F.OK, None, id="error-null-first"),
        pytest.param(200, {}, b"[{}]", F.OK, None, id="array-200"),
        pytest.param(200, {}, b'\xef\xbb\xbf{"id":"c1"}', F.OK, None, id="bom-200"),
        pytest.param(
            200,
            {},
            b'{"error":{"code":400,"message":"bad temperature"}}',
            F.BAD_REQUEST,
            None,
            id="caller-error-object-200",
        ),
        pytest.param(
            200,
            {},
            b'{"error":{"message":"bad key","type":"authentication_error"}}',
            F.AUTH,
            None,
            id="auth-object-200",
        ),
        pytest.param(200, {}, b" \r\n", F.SERVER_ERROR, None, id="blank-200"),
        pytest.param(400, {}, b"[" * 100_000, F.SERVER_ERROR, None, id="unparseably-deep"),
        pytest.param(400, {}, nested_error(1000), F.SERVER_ERROR, None, id="deep-400"),
        pytest.param(429, {}, nested_error(5000), F.SERVER_ERROR, None, id="deep-429"),
    ],
)
def test_classify_response_maps_provider_signals(status, headers, body, failure, retry_after):
    verdict = classify_response(status, headers, body)
    assert verdict.failure is failure
    if retry_after is None:
        assert verdict.retry_after is None
    else:
        assert verdict.retry_after == pytest.approx(retry_after)


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_stream_error_event_too_deep_to_read_is_a_server_error(depth):
    assert classify_stream_error(nested_error(depth)).failure is F.SERVER_ERROR


def test_stream_error_event_is_classified_by_its_type():
    rate = classify_stream_error(b'{"error":{"message":"slow down","code":"rate_limit_exceeded"}}')
    assert rate.failure is F.RATE_LIMITED
    server = classify_stream_error(b'{"error":{"message":"boom","type":"server_error"}}')
    assert server.failure is F.SERVER_ERROR
    overloaded = classify_stream_error(b'{"error":{"type":"overloaded_error","message":"O"}}')
    assert overloaded.failure is F.OVERLOADED


def test_error_fields_accepts_flat_and_array_bodies():
    assert error_fields(b'{"object":"error","message":"m","type":"t","code":400}') == (
        "t",
        "400",
        "m",
    )
    assert error_fields(b'[{"error":{"code":429,"message":"m","status":"R"}}]') == ("", "429", "m")
    assert error_fields(b"not json")[2] == "not json"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723.0),
        ("0.5", 0.5),
        ("soon", None),
        ("", None),
        ("5s junk", None),
        ("inf", None),  # float() reads these; no reset is infinitely far
        ("nan", None),
        ("1e3", 1000.0),
        ("0.5ms", 0.0005),
        ("1m30.5s", 90.5),
        ("1m", 60.0),
        (" 5s", 5.0),
        ("5s ", 5.0),
        ("1m1m1s", 121.0),
        ("ms", None),
        ("m5s", None),
    ],
)
def test_parse_duration_reads_go_durations(text, seconds):
    if seconds is None:
        assert parse_duration(text) is None
    else:
        assert parse_duration(text) == pytest.approx(seconds)


def test_retry_after_from_text_reads_ms_and_seconds():
    assert retry_after_from_text("Please try again in 84ms.") == pytest.approx(0.084)
    assert retry_after_from_text("Please retry after 6 seconds.") == 6.0
    assert retry_after_from_text("nothing here") is None


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "inf"}, MAX_WAIT),
        ({"retry-after": "1e308"}, MAX_WAIT),
        ({"retry-after": "99999999999"}, MAX_WAIT),
        ({"retry-after-ms": "1e400"}, MAX_WAIT),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-inf"}, 0.0),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX_WAIT),
    ],
    ids=["inf", "1e308", "3000-years", "ms-inf", "nan", "minus-inf", "year-9999"],
)
def test_a_wait_an_upstream_asks_for_is_at_most_a_day(headers, wait):
    """A broken or hostile upstream's Retry-After took a key out for millennia, and
    `inf` made every later 429's own Retry-After raise (a bare 500)."""
    verdict = classify_response(429, headers, b"{}")
    assert verdict.retry_after == wait  # (a wait past the rules' threshold reads as quota)


def test_every_other_wait_an_upstream_names_is_at_most_a_day():
    assert parse_duration("1e999") == MAX_WAIT  # a bare number: seconds, here infinite
    assert parse_duration("nan") is None
    assert parse_duration("999999m0s") == MAX_WAIT
    assert parse_duration("100000h") == MAX_WAIT
    assert retry_after_from_text("Please try again in 99999999999 seconds.") == MAX_WAIT
    room = parse_headroom(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "999999m1s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "999999999s",
        }
    )
    assert room is not None
    assert (room.requests_reset_in, room.tokens_reset_in) == (MAX_WAIT, MAX_WAIT)
    far = parse_anthropic_headroom(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
        },
        now_epoch=0.0,
    )
    assert far is not None and far.requests_reset_in == MAX_WAIT


def test_parse_headroom_treats_negative_values_as_unknown():
    room = parse_headroom(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-limit-tokens": "-1",
            "x-ratelimit-remaining-tokens": "-1",
            "x-ratelimit-reset-tokens": "0",
        }
    )
    assert room is not None
    assert room.remaining_requests == 4999 and room.limit_requests == 5000
    assert room.requests_reset_in == pytest.approx(0.012)
    assert room.remaining_tokens is None and room.limit_tokens is None
    assert parse_headroom({"content-type": "application/json"}) is None


def test_parse_headroom_reads_counts_written_as_floats():
    room = parse_headroom(
        {"x-ratelimit-remaining-requests": "4999.0", "x-ratelimit-remaining-tokens": "junk"}
    )
    assert room is not None
    assert room.remaining_requests == 4999 and room.remaining_tokens is None


def test_parse_headroom_takes_counts_too_large_for_a_number_as_unknown():
    """An upstream's 5,000 digits, or a float's overflow: no count, and no exception."""
    huge = {"x-ratelimit-remaining-requests": "9" * 5000, "x-ratelimit-remaining-tokens": "1e400"}
    assert parse_headroom(huge) is None
    room = parse_headroom({"x-ratelimit-remaining-requests": "12345678901234567890"})
    assert room is not None and room.remaining_requests == 12345678901234567890


def _headroom_header_by_header(headers: dict[str, str]) -> Headroom | None:
    """parse_headroom as each header alone reads: what its one match must agree with."""
    requests = _count(headers.get("x-ratelimit-remaining-requests"))
    tokens = _count(headers.get("x-ratelimit-remaining-tokens"))
    if requests is None and tokens is None:
        return None
    resets = [headers.get(f"x-ratelimit-reset-{d}") for d in ("requests", "tokens")]
    return Headroom(
        remaining_requests=requests,
        limit_requests=_count(headers.get("x-ratelimit-limit-requests")),
        requests_reset_in=parse_duration(resets[0]) if resets[0] else None,
        remaining_tokens=tokens,
        limit_tokens=_count(headers.get("x-ratelimit-limit-tokens")),
        tokens_reset_in=parse_duration(resets[1]) if resets[1] else None,
    )


_COUNTS = [
    "0",
    "7",
    "4999",
    "9" * 15,
    "9" * 16,
    "-1",
    "12.5",
    "1e3",
    "junk",
    "",
    "\u0664\u0662",
    "1 2",
]
_DURATIONS = ["12ms", "1s", "8.64s", "6m0s", "2m59.56s", "1h2m", "0", "", "5", "1.5", "xs"]
_DURATIONS += ["1234567m1s", "\u0661s", "6m", "ms"]


def test_parse_headroom_reads_every_header_as_it_would_alone() -> None:
    """The one match over all six headers (OpenAI's usual forms) gives what reading
    each header on its own gives, for usual, odd and missing values alike."""
    rng = random.Random(15)
    counts = [
        f"x-ratelimit-{w}-{d}" for w in ("remaining", "limit") for d in ("requests", "tokens")
    ]
    resets = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
    usual = 0
    for _ in range(3000):
        headers = {}
        for name, values in [(n, _COUNTS) for n in counts] + [(n, _DURATIONS) for n in resets]:
            if rng.random() < 0.85:  # mostly present, and mostly the usual forms
                headers[name] = rng.choice(values[:5] if rng.random() < 0.7 else values)
        expected = _headroom_header_by_header(headers)
        assert parse_headroom(headers) == expected, headers
        usual += (
            _USUAL_HEADROOM.fullmatch("\n".join(headers.get(n, "") for n in counts + resets))
            is not None
        )
    assert usual > 100  # the one match itself was taken, not only the header-by-header path


def test_every_failure_class_has_exactly_one_action() -> None:
    assert list(ACTIONS) == list(FailureClass)


@pytest.mark.parametrize(
    ("failures", "next_step", "penalty", "caller_fault"),
    [
        pytest.param([F.RATE_LIMITED], Next.NEXT_ROUTE, Penalty.COOLDOWN, False, id="429"),
        pytest.param([F.QUOTA, F.AUTH], Next.NEXT_ROUTE, Penalty.KEY_OUT, False, id="key-out"),
        pytest.param(
            [F.SERVER_ERROR, F.OVERLOADED, F.CONNECTION, F.TIMEOUT],
            Next.NEXT_ROUTE,
            Penalty.CIRCUIT,
            False,
            id="transient",
        ),
        pytest.param(
            [F.MODEL_NOT_FOUND, F.REDIRECT], Next.NEXT_ROUTE, Penalty.ROUTE_OUT, False, id="404-3xx"
        ),
        pytest.param(
            [F.BAD_REQUEST, F.CONTENT_POLICY], Next.ANSWER, Penalty.NONE, True, id="own-fault"
        ),
        pytest.param(
            [F.CONTEXT_TOO_LONG], Next.CONTEXT_FALLBACK, Penalty.NONE, True, id="too-long"
        ),
        pytest.param([F.UNKNOWN], Next.ANSWER, Penalty.NONE, False, id="unknown-is-passed-on"),
        pytest.param(
            [F.NOT_ON_THIS_KEY], Next.NEXT_ROUTE, Penalty.NONE, False, id="not-on-this-key"
        ),
        pytest.param([F.LOCAL_RESOURCE], Next.STOP, Penalty.NONE, False, id="router-own-limit"),
    ],
)
def test_the_actions_are_the_rules_readme_states(failures, next_step, penalty, caller_fault):
    """README "How it chooses and fails over", row by row."""
    for failure in failures:
        action = ACTIONS[failure]
        assert (action.next, action.penalty, action.caller_fault) == (
            next_step,
            penalty,
            caller_fault,
        )
        assert action.counts_as_error == (penalty is not Penalty.NONE)


def test_a_request_too_large_for_a_key_fails_over_without_blaming_the_key() -> None:
    action = ACTIONS[F.EXCEEDS_TPM]
    assert action.fails_over and not action.counts_as_error and action.answer_when_all


@pytest.mark.parametrize(
    ("number", "failure"),
    [
        (errno.EMFILE, F.LOCAL_RESOURCE),
        (errno.ENFILE, F.LOCAL_RESOURCE),
        (errno.ENOBUFS, F.LOCAL_RESOURCE),
        (errno.EADDRNOTAVAIL, F.LOCAL_RESOURCE),
        (errno.ENOMEM, F.LOCAL_RESOURCE),
        (errno.ECONNREFUSED, F.CONNECTION),
        (errno.ECONNRESET, F.CONNECTION),
    ],
)
def test_the_routers_own_resource_errors_are_not_the_upstreams(number, failure) -> None:
    mapped = _mapped(OSError(number, os.strerror(number)), "a/m", "first_byte")
    assert mapped is not None
    verdict = classify_exception(mapped)
    assert verdict.failure is failure
    if failure is F.LOCAL_RESOURCE:
        assert errno.errorcode[number] in verdict.message
        action = ACTIONS[failure]
        assert not action.fails_over and not action.counts_as_error
        assert not action.judges_route
