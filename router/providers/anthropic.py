"""Anthropic's Messages API: `api_base` is the host only (as ANTHROPIC_BASE_URL).

The key goes in `x-api-key`; `anthropic-version` is the client's when it sent one
(the SDKs do), else a fixed default. Headroom comes from `anthropic-ratelimit-*`
headers whose resets are RFC 3339 timestamps (provider-signals.md §4.3).
"""

from __future__ import annotations

from collections.abc import Mapping

from router.providers.base import Operation
from router.ratelimit import parse_anthropic_headroom
from router.types import Headroom, Key

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider:
    name = "anthropic"
    operations = frozenset({Operation.MESSAGES})

    def url(self, key: Key, operation: Operation, model: str) -> str:
        return f"{key.api_base}/v1/messages"

    def auth_headers(self, key: Key, client_headers: Mapping[str, str]) -> dict[str, str]:
        version = client_headers.get("anthropic-version") or ANTHROPIC_VERSION
        return {"x-api-key": key.api_key, "anthropic-version": version}

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        return parse_anthropic_headroom(headers)

    def names_model_in_url(self) -> bool:
        return False
