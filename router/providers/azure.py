"""Azure OpenAI: OpenAI's wire format on a deployment URL, with an `api-key` header.

`api_base` is the resource endpoint (https://NAME.openai.azure.com); the route's `model`
is the deployment name; `api_version` is a key field (provider-signals.md §3). Its
answers are OpenAI's, so they pass through byte for byte like OpenAI's.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from router.providers.base import Operation
from router.ratelimit import parse_headroom
from router.types import Headroom, Key

DEFAULT_API_VERSION = "2024-10-21"
_PATHS = {Operation.CHAT: "chat/completions", Operation.EMBEDDINGS: "embeddings"}


class AzureProvider:
    name = "azure"
    operations = frozenset(_PATHS)

    def url(self, key: Key, operation: Operation, model: str) -> str:
        version = key.api_version or DEFAULT_API_VERSION
        deployment = quote(model, safe="")
        return (
            f"{key.api_base}/openai/deployments/{deployment}/{_PATHS[operation]}"
            f"?api-version={quote(version, safe='')}"
        )

    def auth_headers(self, key: Key, client_headers: Mapping[str, str]) -> dict[str, str]:
        return {"api-key": key.api_key}

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        # Azure sends x-ratelimit-remaining-* (and -1 on some APIs: unknown).
        return parse_headroom(headers)

    def names_model_in_url(self) -> bool:
        return True
