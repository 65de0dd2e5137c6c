"""OpenAI and every OpenAI-compatible API (Groq, Together, vLLM, ...): `api_base` ends in /v1."""

from __future__ import annotations

from collections.abc import Mapping

from router.providers.base import Operation
from router.ratelimit import parse_headroom
from router.types import Headroom, Key

_PATHS = {
    Operation.CHAT: "/chat/completions",
    Operation.EMBEDDINGS: "/embeddings",
    Operation.RESPONSES: "/responses",
}


class OpenAIProvider:
    name = "openai"
    operations = frozenset(_PATHS)

    def url(self, key: Key, operation: Operation, model: str) -> str:
        return key.api_base + _PATHS[operation]

    def auth_headers(self, key: Key, client_headers: Mapping[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.api_key}"}

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None:
        return parse_headroom(headers)

    def names_model_in_url(self) -> bool:
        return False
