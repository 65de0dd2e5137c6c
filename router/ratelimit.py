"""Pure parsing of the rate-limit signals providers put in headers and messages.

Formats (provider-signals.md §2.1, §3, §4.3, §5.1):
- OpenAI/Groq `x-ratelimit-reset-*` are Go durations: `12ms`, `1s`, `6m0s`, `2m59.56s`.
- `retry-after-ms` is milliseconds; `retry-after` is seconds (float allowed) or an HTTP-date.
- Messages carry the wait as text: OpenAI "Please try again in 1.146s" / "in 84ms",
  Azure "Please retry after 6 seconds", Gemini "Please retry in 58.93s".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from router.types import Headroom

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_WAIT_IN_TEXT = re.compile(
    r"(?:try again in|retry in|retry after)\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|seconds?)\b",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float | None:
    """Go-style duration to seconds; a bare number is seconds. None when unreadable."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total, end = 0.0, 0
    for match in _GO_DURATION.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        end = match.end()
    return total if end == len(text) else None


def retry_after_from_headers(headers: Mapping[str, str], *, now_epoch: float) -> float | None:
    """The wait a 429/503 asks for, in the order the official SDKs read it (§10)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(raw).timestamp() - now_epoch)
            except (TypeError, ValueError):
                return None
    return None


def retry_after_from_text(message: str) -> float | None:
    match = _WAIT_IN_TEXT.search(message)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2).lower().startswith("m") else value


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw))
    except ValueError:
        return None
    # Azure sends -1 on some APIs: unknown, not "none left" (§2.1).
    return value if value >= 0 else None


def _duration_header(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    return parse_duration(raw) if raw else None


def parse_headroom(headers: Mapping[str, str]) -> Headroom | None:
    """OpenAI-style `x-ratelimit-*` headers, sent on every response, 200s included."""
    if "x-ratelimit-remaining-requests" not in headers and (
        "x-ratelimit-remaining-tokens" not in headers
    ):
        return None
    headroom = Headroom(
        remaining_requests=_int_header(headers, "x-ratelimit-remaining-requests"),
        limit_requests=_int_header(headers, "x-ratelimit-limit-requests"),
        requests_reset_in=_duration_header(headers, "x-ratelimit-reset-requests"),
        remaining_tokens=_int_header(headers, "x-ratelimit-remaining-tokens"),
        limit_tokens=_int_header(headers, "x-ratelimit-limit-tokens"),
        tokens_reset_in=_duration_header(headers, "x-ratelimit-reset-tokens"),
    )
    if headroom.remaining_requests is None and headroom.remaining_tokens is None:
        return None
    return headroom


def exhausted_reset_in(headroom: Headroom) -> float | None:
    """When a dimension is at zero, the seconds until its bucket refills (§11.2 (d))."""
    waits = []
    if headroom.remaining_requests == 0 and headroom.requests_reset_in is not None:
        waits.append(headroom.requests_reset_in)
    if headroom.remaining_tokens == 0 and headroom.tokens_reset_in is not None:
        waits.append(headroom.tokens_reset_in)
    return max(waits) if waits else None
