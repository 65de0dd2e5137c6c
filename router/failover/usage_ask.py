"""Asking an upstream for a stream's usage chunk on the client's behalf, where it may.

Costs and token metrics need the usage chunk, which OpenAI sends only when asked
(`stream_options.include_usage`, provider-signals.md §9.1). Some OpenAI-format APIs
refuse the field: Azure before api-version 2024-09-01-preview answers 400 "Unrecognized
request argument supplied: stream_options", and servers that reject fields they do not
know answer 400 or 422 (FastAPI). The client did not send the field, so that error is
the router's doing, not the caller's: the attempt is sent again without it, and the key
is not asked again in this process. `stream_usage: false` on a key skips the ask from
the start.
"""

from __future__ import annotations

import structlog

from router.failover.call import Call
from router.types import Key

log = structlog.get_logger("router.usage")

_FIELD = b"stream_options"
_REFUSED_STATUSES = (400, 422)  # 422: FastAPI-based servers refusing an extra field


class UsageRequest:
    """Which keys get the usage ask; learns the keys whose API refuses it."""

    __slots__ = ("_refused",)

    def __init__(self) -> None:
        self._refused: set[str] = set()

    def wanted(self, call: Call, key: Key) -> bool:
        """Whether this call's body to `key` should ask for the usage chunk."""
        return call.strip_usage and key.stream_usage and key.name not in self._refused

    def refused(self, key: Key, status: int, body: bytes) -> bool:
        """True when an answer to a body that asked is the upstream refusing the field;
        the key is then not asked again."""
        if status not in _REFUSED_STATUSES or body.find(_FIELD) < 0:
            return False
        if key.name not in self._refused:
            self._refused.add(key.name)
            log.warning(
                "usage_request_refused",
                key=key.name,
                status=status,
                detail="the upstream refuses stream_options: its streams go on without "
                "usage, so without costs or token counts; set stream_usage: false on "
                "this key to skip the first try",
            )
        return True


__all__ = ["UsageRequest"]
