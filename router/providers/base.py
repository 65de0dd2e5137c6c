"""What every provider module offers (`Operation` lives in `types.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from router.types import Headroom, Key, Operation


class Provider(Protocol):
    name: str
    operations: frozenset[Operation]  # what it serves byte for byte

    def url(self, key: Key, operation: Operation, model: str) -> str: ...

    def auth_headers(self, key: Key, client_headers: Mapping[str, str]) -> dict[str, str]: ...

    def headroom(self, headers: Mapping[str, str]) -> Headroom | None: ...

    def names_model_in_url(self) -> bool:
        """True when the URL, not the body, says which model (Azure deployments)."""
        ...
