"""Serving a client API from a provider that speaks another one, through litellm.

When the client's API and the route's provider match, the body passes through byte for
byte (`upstream/providers.py`); when they differ, a `Translator` makes the call through litellm and
hands back an object with `UpstreamResponse`'s surface, in the client's format:

    translator = translator_for(route.key.provider, call.operation)   # None: passthrough
    response = await translator.send(route, call.operation, call.payload,
                                     stream=call.stream, head_timeout=...)
    response.status, response.headers, await response.read(t) / next_chunk(t), finish()

- CHAT (OpenAI chat completions) onto `anthropic`, `gemini` or any other provider
  litellm knows: `openai_litellm.py`.
- MESSAGES (Anthropic Messages) onto `openai`, `azure` or any other non-Anthropic
  provider: `anthropic_litellm.py`.
- EMBEDDINGS and RESPONSES are passthrough only.

litellm is the `translate` extra. Without it nothing is translated: `translator_for`
says None, so a route serves only what its provider speaks natively, and a key whose
provider is reached only through litellm is a config error (`config/__init__.py`).

Errors keep the provider's own status, headers and body where litellm kept them
(`failures.py`), so `classify_response` reads the real signal. Importing this package
does not import litellm: `runtime.load()` does, on first use or at `preload()`;
`shutdown()` closes the HTTP clients litellm cached.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol

from router.types import DEFAULT_API_BASES, Operation, Route
from router.upstream import UpstreamResponse
from router.upstream.providers import PROVIDERS
from router.upstream.translate.anthropic_litellm import AnthropicMessagesTranslator
from router.upstream.translate.endpoints import GEMINI_API_BASE
from router.upstream.translate.openai_litellm import OpenAIChatTranslator
from router.upstream.translate.runtime import (
    available,
    litellm_providers,
    preload,
    retire,
    shutdown,
)


class TranslatedResponse(Protocol):
    """`router.upstream.UpstreamResponse`'s surface."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def route_id(self) -> str: ...
    async def read(self, timeout: float, total: float | None = None) -> bytes: ...
    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes: ...
    def limit_stream(self, seconds: float) -> None: ...
    def ended(self) -> bool: ...
    def finish(self) -> None: ...


# What an attempt reads an answer from: the passthrough's own response or a translation's.
Response = UpstreamResponse | TranslatedResponse


class Translator(Protocol):
    async def send(
        self,
        route: Route,
        operation: Operation,
        payload: dict[str, Any],
        *,
        stream: bool,
        head_timeout: float,
    ) -> TranslatedResponse: ...


_CHAT = OpenAIChatTranslator()
_MESSAGES = AnthropicMessagesTranslator()


def can_serve(provider: str, operation: Operation) -> bool:
    """Whether a key of `provider` serves `operation`: natively (byte passthrough) or
    through litellm's translation."""
    native = PROVIDERS.get(provider)
    if native is not None and operation in native.operations:
        return True
    return translator_for(provider, operation) is not None


@functools.cache
def translator_for(provider: str, operation: Operation) -> Translator | None:
    """None when the provider serves the operation natively (passthrough) or not at all,
    or when it needs translation and litellm is not installed."""
    translator = translation(provider, operation)
    return translator if translator is not None and available() else None


def translation(provider: str, operation: Operation) -> Translator | None:
    """The translator that would serve `operation` from `provider`, litellm installed or not."""
    native = PROVIDERS.get(provider)
    if native is not None and operation in native.operations:
        return None
    translator: Translator
    if operation is Operation.CHAT:
        translator = _CHAT
    elif operation is Operation.MESSAGES and provider != "anthropic":
        translator = _MESSAGES
    else:
        return None
    # The providers with a default api_base are litellm's too; asking litellm's list
    # about them would read its 8 MB price map for nothing (5 MB of RSS kept after).
    if provider not in DEFAULT_API_BASES and provider not in litellm_providers():
        return None
    return translator


__all__ = [
    "GEMINI_API_BASE",
    "Response",
    "TranslatedResponse",
    "Translator",
    "available",
    "can_serve",
    "litellm_providers",
    "preload",
    "retire",
    "shutdown",
    "translation",
    "translator_for",
]
