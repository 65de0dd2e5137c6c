"""The operations a client can ask for, and what every provider module offers."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

from router.types import Headroom, Key


class Operation(StrEnum):
    """A client-facing API; each is served by routes whose provider speaks it natively."""

    CHAT = "chat"  # OpenAI /v1/chat/completions
    EMBEDDINGS = "embeddings"  # OpenAI /v1/embeddings
    RESPONSES = "responses"  # OpenAI /v1/responses
    MESSAGES = "messages"  # Anthropic /v1/messages


class Provider(Protocol):
    name: str
    operations: frozenset[Operation]  # what it serves byte for byte

    def url(self, key: Key, operation: Operation, model: str) -> str: ...

    def auth_headers(self, key: Key, client_headers: Mapping[str, str]) -> dict[str, str]: ...

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None: ...

    def names_model_in_url(self) -> bool:
        """True when the URL, not the body, says which model (Azure deployments)."""
        ...
