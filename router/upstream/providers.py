"""How to reach each provider byte for byte: URL per operation, auth headers, headroom.

What an answer *means* is decided in `rules/failures.py`, for every provider in one place.
Providers reached through litellm are in `upstream/translate/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

from router.outcomes import Headroom
from router.rules.ratelimit import parse_anthropic_headroom, parse_headroom
from router.types import Key, Operation


class Provider(Protocol):
    name: str
    operations: frozenset[Operation]  # what it serves byte for byte

    def url(self, key: Key, operation: Operation, model: str) -> str: ...

    def auth_headers(self, key: Key, headers: Mapping[str, str]) -> dict[str, str]:
        """The key's credential (and what goes with it), given the request's other
        headers by lowercase name; replaces any of those with the same name."""
        ...

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None: ...


class OpenAIProvider:
    """OpenAI and every OpenAI-compatible API (Groq, Together, vLLM, ...): `api_base`
    ends in /v1."""

    name = "openai"
    _paths: Mapping[Operation, str] = {
        Operation.CHAT: "/chat/completions",
        Operation.EMBEDDINGS: "/embeddings",
        Operation.RESPONSES: "/responses",
    }
    operations = frozenset(_paths)

    def url(self, key: Key, operation: Operation, model: str) -> str:
        return key.api_base + self._paths[operation]

    def auth_headers(self, key: Key, headers: Mapping[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {key.api_key}"}

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        return parse_headroom(headers)


AZURE_API_VERSION = "2024-10-21"


class AzureProvider:
    """Azure OpenAI: OpenAI's wire format on a deployment URL, with an `api-key` header.

    `api_base` is the resource endpoint (https://NAME.openai.azure.com); the route's
    `model` is the deployment name; `api_version` is a key field (provider-signals.md
    §3). Its answers are OpenAI's, so they pass through byte for byte like OpenAI's.
    """

    name = "azure"
    _paths: Mapping[Operation, str] = {
        Operation.CHAT: "chat/completions",
        Operation.EMBEDDINGS: "embeddings",
    }
    operations = frozenset(_paths)

    def url(self, key: Key, operation: Operation, model: str) -> str:
        version = key.api_version or AZURE_API_VERSION
        deployment = quote(model, safe="")
        return (
            f"{key.api_base}/openai/deployments/{deployment}/{self._paths[operation]}"
            f"?api-version={quote(version, safe='')}"
        )

    def auth_headers(self, key: Key, headers: Mapping[str, str]) -> dict[str, str]:
        return {"api-key": key.api_key}

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        # Azure sends x-ratelimit-remaining-* (and -1 on some APIs: unknown).
        return parse_headroom(headers)


ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider:
    """Anthropic's Messages API: `api_base` is the host only (as ANTHROPIC_BASE_URL).

    The key goes in `x-api-key`; `anthropic-version` is the key's (`headers:`) or the
    client's when either has one (the SDKs send it), else a fixed default. Headroom
    comes from `anthropic-ratelimit-*` headers whose resets are RFC 3339 timestamps
    (provider-signals.md §4.3).
    """

    name = "anthropic"
    _paths: Mapping[Operation, str] = {
        Operation.MESSAGES: "/v1/messages",
        Operation.COUNT_TOKENS: "/v1/messages/count_tokens",
    }
    operations = frozenset(_paths)

    def url(self, key: Key, operation: Operation, model: str) -> str:
        return key.api_base + self._paths[operation]

    def auth_headers(self, key: Key, headers: Mapping[str, str]) -> dict[str, str]:
        version = headers.get("anthropic-version") or ANTHROPIC_VERSION
        return {"x-api-key": key.api_key, "anthropic-version": version}

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        return parse_anthropic_headroom(headers)


PROVIDERS: Mapping[str, Provider] = {
    "openai": OpenAIProvider(),
    "azure": AzureProvider(),
    "anthropic": AnthropicProvider(),
}

__all__ = ["PROVIDERS", "Provider"]
