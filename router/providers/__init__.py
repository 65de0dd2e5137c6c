"""How to reach each provider: URL per operation, auth headers, rate-limit headroom.

One module per provider; `provider_for(key)` picks it. What an answer *means* is
decided in `classify.py`, for every provider in one place.
"""

from __future__ import annotations

from router.providers.anthropic import AnthropicProvider
from router.providers.azure import AzureProvider
from router.providers.base import Operation, Provider
from router.providers.openai import OpenAIProvider
from router.types import Key

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "azure": AzureProvider(),
    "anthropic": AnthropicProvider(),
}


def provider_for(key: Key) -> Provider:
    return PROVIDERS[key.provider]


__all__ = ["PROVIDERS", "Operation", "Provider", "provider_for"]
