"""A key's `proxy:` for the requests litellm sends: one litellm HTTP client per key.

litellm finds its proxy in HTTPS_PROXY/NO_PROXY itself, for every client it makes. A
key's own `proxy:` (a URL, or `none`: direct) reaches a call only as the `client=`
argument, which litellm's Anthropic and Gemini handlers take (an AsyncHTTPHandler,
`litellm_internals.proxied_handler`). The OpenAI-compatible handlers (`openai`, `azure`,
`openrouter`, ...) take an OpenAI SDK client instead; a `proxy:` does not reach their
translated requests, and the config loader says so (`takes_proxy`).

Each key's client is built on its first translated request and kept (by key name and
proxy, so a reload that changes the proxy gets a new one and in-flight streams keep
theirs); `close()` closes them all at shutdown (`runtime.shutdown`). Per request: one
dict lookup, for a key with a `proxy:` only.
"""

from __future__ import annotations

from typing import Any

from router.types import Key, Proxy
from router.upstream.translate import litellm_internals

# The providers whose litellm handler takes an AsyncHTTPHandler as `client=`.
PROXIED_PROVIDERS = frozenset({"anthropic", "gemini"})

_handlers: dict[tuple[str, Proxy | None], Any] = {}


def takes_proxy(provider: str) -> bool:
    """Whether a key's `proxy:` reaches the requests litellm sends to `provider`."""
    return provider in PROXIED_PROVIDERS


def client_arguments(key: Key) -> dict[str, Any]:
    """`{"client": ...}` for a key whose routes.yaml entry sets `proxy:`; else nothing,
    and litellm picks its own client (and the environment's proxy)."""
    if not key.proxy_given or key.provider not in PROXIED_PROVIDERS:
        return {}
    held = (key.name, key.proxy)
    handler = _handlers.get(held)
    if handler is None:
        handler = _handlers[held] = litellm_internals.proxied_handler(key.proxy)
    return {"client": handler}


async def close() -> None:
    """Close every key's client (their connections to proxies and providers)."""
    handlers = list(_handlers.values())
    _handlers.clear()
    for handler in handlers:
        await handler.close()
