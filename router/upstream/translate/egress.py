"""A key's `proxy:` for the requests litellm sends: one litellm HTTP client per key.

litellm finds its proxy in HTTPS_PROXY/NO_PROXY itself, for every client it makes. A
key's own `proxy:` (a URL, or `none`: direct) reaches a call only as the `client=`
argument, whose type depends on litellm's handler for the provider: its Anthropic and
Gemini handlers take an AsyncHTTPHandler (`litellm_internals.proxied_handler`), its
OpenAI-compatible handlers for `openai` and `azure` keys (Anthropic clients on them) an
OpenAI SDK client (`litellm_internals.proxied_openai_client`), which carries the key's
secret and base URL itself. For other providers litellm serves (`openrouter`, `groq`,
...) a `proxy:` does not reach their translated requests, and the config loader says
so (`takes_proxy`).

Each key's client is built on its first translated request and kept (by key name,
proxy, secret, base URL and API version, so a reload that changes any of them gets a
new one and in-flight streams keep theirs); `close()` closes them all at shutdown
(`runtime.shutdown`). Per request: one dict lookup, for a key with a `proxy:` only.
"""

from __future__ import annotations

from typing import Any

from router.types import Key, Proxy
from router.upstream.translate import litellm_internals

# The providers whose litellm handler takes an AsyncHTTPHandler as `client=`, and those
# whose handler takes an OpenAI SDK client.
_HTTP_HANDLER_PROVIDERS = frozenset({"anthropic", "gemini"})
_OPENAI_SDK_PROVIDERS = frozenset({"openai", "azure"})
PROXIED_PROVIDERS = _HTTP_HANDLER_PROVIDERS | _OPENAI_SDK_PROVIDERS

_Held = tuple[str, Proxy | None, str, str | None, str | None]
_clients: dict[_Held, Any] = {}


def takes_proxy(provider: str) -> bool:
    """Whether a key's `proxy:` reaches the requests litellm sends to `provider`."""
    return provider in PROXIED_PROVIDERS


def client_arguments(key: Key, api_base: str | None) -> dict[str, Any]:
    """`{"client": ...}` for a key whose routes.yaml entry sets `proxy:`; else nothing,
    and litellm picks its own client (and the environment's proxy). `api_base` is the
    one the call gives litellm (None: litellm's default)."""
    if not key.proxy_given or key.provider not in PROXIED_PROVIDERS:
        return {}
    held = (key.name, key.proxy, key.api_key, api_base, key.api_version)
    client = _clients.get(held)
    if client is None:
        client = _clients[held] = _client(key, api_base)
    return {"client": client}


def _client(key: Key, api_base: str | None) -> Any:
    if key.provider in _HTTP_HANDLER_PROVIDERS:
        return litellm_internals.proxied_handler(key.proxy)
    return litellm_internals.proxied_openai_client(
        key.proxy,
        azure=key.provider == "azure",
        api_key=key.api_key,
        api_base=api_base,
        api_version=key.api_version,
    )


async def close() -> None:
    """Close every key's client (their connections to proxies and providers)."""
    clients = list(_clients.values())
    _clients.clear()
    for client in clients:
        await client.close()
