"""Pure parsing of the rate-limit signals providers put in headers and messages.

Formats (provider-signals.md §2.1, §3, §4.3, §5.1):
- OpenAI/Groq `x-ratelimit-reset-*` are Go durations: `12ms`, `1s`, `6m0s`, `2m59.56s`.
- `retry-after-ms` is milliseconds; `retry-after` is seconds (float allowed) or an HTTP-date.
- Messages carry the wait as text: OpenAI "Please try again in 1.146s" / "in 84ms",
  Azure "Please retry after 6 seconds", Gemini "Please retry in 58.93s".
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from router.outcomes import Headroom

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_WAIT_IN_TEXT = re.compile(
    r"(?:try again in|retry in|retry after)\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|seconds?)\b",
    re.IGNORECASE,
)


# The longest wait an upstream may ask for, by header or message: a day. A larger one (a
# typo, a broken or hostile upstream: `Retry-After: 1e308`, `inf`, a reset in the year
# 9999) is a day, and the router asks again then; one that is no number (`nan`) is none.
# Unbounded, it took a key out for millennia, and `inf` broke every answer's Retry-After.
MAX_WAIT = 86_400.0


def bounded(seconds: float) -> float | None:
    """`seconds` within 0 and MAX_WAIT; None for NaN."""
    if seconds != seconds:
        return None
    return 0.0 if seconds < 0.0 else seconds if seconds < MAX_WAIT else MAX_WAIT


# The shapes OpenAI's headers take nearly always: `12ms`, `1s`, `8.64s`, `6m0s`, `2m59.56s`.
_USUAL_DURATION = re.compile(r"(?:(\d{1,6})m)?(\d{1,9}(?:\.\d{1,9})?)(s|ms)")


def parse_duration(text: str) -> float | None:
    """Go-style duration to seconds; a bare number is seconds. None when unreadable."""
    usual = _USUAL_DURATION.fullmatch(text)
    if usual is not None:  # one match, where the general reading loops over the parts
        minutes, amount, unit = usual.groups()
        seconds = float(amount) if unit == "s" else float(amount) * 1e-3
        return bounded(seconds + int(minutes) * 60.0 if minutes else seconds)
    text = text.strip()
    if not text:
        return None
    if text[-1].isdigit():  # a bare number; a Go duration ends in its unit
        try:
            return bounded(float(text))
        except ValueError:
            return None
    total, end = 0.0, 0
    for match in _GO_DURATION.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        end = match.end()
    return bounded(total) if end == len(text) else None


def retry_after_from_headers(headers: Mapping[str, str], *, now_epoch: float) -> float | None:
    """The wait a 429/503 asks for, in the order the official SDKs read it (§10)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return bounded(float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return bounded(float(raw))
        except ValueError:
            try:
                return bounded(parsedate_to_datetime(raw).timestamp() - now_epoch)
            except (TypeError, ValueError, OverflowError):
                return None
    return None


def retry_after_from_text(message: str) -> float | None:
    match = _WAIT_IN_TEXT.search(message)
    if match is None:
        return None
    value = float(match.group(1))
    return bounded(value / 1000 if match.group(2).lower().startswith("m") else value)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    return _count(headers.get(name))


def _count(raw: str | None) -> int | None:
    """A header's count: a whole number, or a float's whole part; None when absent,
    unreadable or negative."""
    if raw is None:
        return None
    if raw.isdecimal() and len(raw) < 16:  # the usual form
        return int(raw)
    try:
        value = int(raw)
    except ValueError:
        try:
            value = int(float(raw))
        except (ValueError, OverflowError):  # "inf", or more digits than a float holds
            return None
    # Azure sends -1 on some APIs: unknown, not "none left" (§2.1).
    return value if value >= 0 else None


# All six headers in their usual forms (`_count`'s whole numbers, `parse_duration`'s
# usual durations), joined by newlines, which no header value holds: one match reads
# them all. Anything else (a header missing, a float, an unusual duration) is read one
# header at a time.
_USUAL_COUNT = r"([0-9]{1,15})"
_USUAL_HEADROOM = re.compile("\n".join([_USUAL_COUNT] * 4 + [_USUAL_DURATION.pattern] * 2))


def parse_headroom(headers: Mapping[str, str]) -> Headroom | None:
    """OpenAI-style `x-ratelimit-*` headers, sent on every response, 200s included.

    Read on every answer: each header is looked up once."""
    get = headers.get
    raw_requests = get("x-ratelimit-remaining-requests")
    raw_tokens = get("x-ratelimit-remaining-tokens")
    if raw_requests is None and raw_tokens is None:
        return None
    raw_limit_requests = get("x-ratelimit-limit-requests")
    raw_limit_tokens = get("x-ratelimit-limit-tokens")
    raw_requests_reset = get("x-ratelimit-reset-requests")
    raw_tokens_reset = get("x-ratelimit-reset-tokens")
    usual = _USUAL_HEADROOM.fullmatch(
        f"{raw_requests}\n{raw_tokens}\n{raw_limit_requests}\n{raw_limit_tokens}"
        f"\n{raw_requests_reset}\n{raw_tokens_reset}"
    )
    if usual is not None:  # OpenAI's, nearly always: one match, no call per header
        (requests, tokens, limit_requests, limit_tokens, minutes, amount, unit,
         tokens_minutes, tokens_amount, tokens_unit) = usual.groups()  # fmt: skip
        requests_reset_in = float(amount) if unit == "s" else float(amount) * 1e-3
        if minutes:
            requests_reset_in += int(minutes) * 60.0
        tokens_reset_in = (
            float(tokens_amount) if tokens_unit == "s" else float(tokens_amount) * 1e-3
        )
        if tokens_minutes:
            tokens_reset_in += int(tokens_minutes) * 60.0
        # Up to a million minutes fit the usual shape: no longer than any other wait.
        if requests_reset_in > MAX_WAIT:
            requests_reset_in = MAX_WAIT
        if tokens_reset_in > MAX_WAIT:
            tokens_reset_in = MAX_WAIT
        return Headroom(int(requests), int(limit_requests), requests_reset_in, int(tokens),
                        int(limit_tokens), tokens_reset_in)  # fmt: skip
    requests, tokens = _count(raw_requests), _count(raw_tokens)
    if requests is None and tokens is None:
        return None
    # Positional, in the fields' order: keywords would reach the class as a dict.
    return Headroom(
        requests,
        _count(raw_limit_requests),
        parse_duration(raw_requests_reset) if raw_requests_reset else None,
        tokens,
        _count(raw_limit_tokens),
        parse_duration(raw_tokens_reset) if raw_tokens_reset else None,
    )


def exhausted_reset_in(headroom: Headroom) -> float | None:
    """When a dimension is at zero, the seconds until its bucket refills (§11.2 (d))."""
    waits = []
    if headroom.remaining_requests == 0 and headroom.requests_reset_in is not None:
        waits.append(headroom.requests_reset_in)
    if headroom.remaining_tokens == 0 and headroom.tokens_reset_in is not None:
        waits.append(headroom.tokens_reset_in)
    return max(waits) if waits else None


def _rfc3339_in(headers: Mapping[str, str], name: str, now_epoch: float) -> float | None:
    raw = headers.get(name)
    if not raw:
        return None
    try:
        return bounded(datetime.fromisoformat(raw).timestamp() - now_epoch)
    except (ValueError, OverflowError):
        return None


def parse_anthropic_headroom(
    headers: Mapping[str, str], *, now_epoch: float | None = None
) -> Headroom | None:
    """`anthropic-ratelimit-*` headers (§4.3): resets are RFC 3339 times, not durations.

    Tokens are limited in three dimensions (all, input, output); the one with the least
    room left, as a share of its limit, is the one that stops the next request.
    """
    prefix = "anthropic-ratelimit-"
    if prefix + "requests-remaining" not in headers and prefix + "tokens-remaining" not in headers:
        return None
    now = time.time() if now_epoch is None else now_epoch
    tightest: tuple[float, int, int | None, float | None] | None = None
    for dimension in ("tokens", "input-tokens", "output-tokens"):
        remaining = _int_header(headers, f"{prefix}{dimension}-remaining")
        if remaining is None:
            continue
        limit = _int_header(headers, f"{prefix}{dimension}-limit")
        share = remaining / limit if limit else float(remaining)
        if tightest is None or share < tightest[0]:
            reset = _rfc3339_in(headers, f"{prefix}{dimension}-reset", now)
            tightest = (share, remaining, limit, reset)
    return Headroom(
        remaining_requests=_int_header(headers, prefix + "requests-remaining"),
        limit_requests=_int_header(headers, prefix + "requests-limit"),
        requests_reset_in=_rfc3339_in(headers, prefix + "requests-reset", now),
        remaining_tokens=tightest[1] if tightest else None,
        limit_tokens=tightest[2] if tightest else None,
        tokens_reset_in=tightest[3] if tightest else None,
    )
