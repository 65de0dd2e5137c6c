"""A key's `proxy:` for the requests litellm sends: one litellm HTTP client per key.

litellm finds its proxy in HTTPS_PROXY/NO_PROXY itself, for every client it makes. A
key's own `proxy:` (a URL, or `none`: direct) reaches a call only as the `client=`
argument, whose type depends on litellm's handler for the provider: its Anthropic and
Gemini handlers, and its generic HTTP handler for `openrouter`, `groq`, `mistral`,
`deepseek`, `together_ai`, `fireworks_ai` and `xai`, take an AsyncHTTPHandler
(`litellm_internals.proxied_handler`); its OpenAI-compatible handler, for `openai` and
`azure` keys (Anthropic clients on them) and for `perplexity`, `deepinfra`, `cerebras`,
`nvidia_nim`, `sambanova` and `nebius` keys, an OpenAI SDK client
(`litellm_internals.proxied_openai_client`), which carries the key's secret and base URL
itself (the provider's default, from litellm, when the key gives none). For other
providers litellm serves (`cohere`, `bedrock`, ...) a `proxy:` does not reach their
translated requests, and the config loader says so (`takes_proxy`).

Each key's client is built on its first translated request and kept (by key name,
provider, proxy, secret, base URL and API version, so a reload that changes any of them
gets a new one and in-flight streams keep theirs), per event loop: a client's
connections belong to the loop that opened them. A request holds a use of its client
from `client_arguments` until `release()`: `litellm_calls` gives it back when a call
returns, or when the stream it opened is closed. After a reload, `retire()` closes the
clients the new config no longer names once their last use is given back. `close()`
closes the running loop's clients at shutdown (`runtime.shutdown`) and forgets those of
loops already closed. Every SWEEP_SECONDS a task closes their expired idle connections,
which httpcore would close only when the client is next used. Per translated request:
a few dict lookups, for a key with a `proxy:` and for every key of the OpenAI SDK's
providers (whose own client follows no redirect).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from router.types import Key, Proxy
from router.upstream.translate import litellm_internals

log = structlog.get_logger("router.translate")

# The providers whose litellm handler takes an AsyncHTTPHandler as `client=`, and those
# whose handler takes an OpenAI SDK client. The OpenAI-compatible ones in the first set
# are sent by litellm's `base_llm_http_handler` with the call's `client` (main.py's
# `_complete_<provider>`, the same from 1.104 to 1.110), as Gemini is.
_HTTP_HANDLER_PROVIDERS = frozenset(
    {"anthropic", "gemini", "openrouter", "groq", "mistral", "deepseek", "together_ai",
     "fireworks_ai", "xai"}
)  # fmt: skip
# The second set: `openai` and `azure`, and the providers litellm sends as custom OpenAI
# ones (`_complete_custom_openai`, an OpenAI SDK client on the provider's default base
# URL, 1.104 to 1.110).
_OPENAI_COMPATIBLE = frozenset(
    {"perplexity", "deepinfra", "cerebras", "nvidia_nim", "sambanova", "nebius"}
)
_OPENAI_SDK_PROVIDERS = frozenset({"openai", "azure"}) | _OPENAI_COMPATIBLE
PROXIED_PROVIDERS = _HTTP_HANDLER_PROVIDERS | _OPENAI_SDK_PROVIDERS

# What a key's client is made from: name, provider, proxy, secret, base URL, API version.
_Identity = tuple[str, str, Proxy | None, str, str, str | None]


@dataclass(slots=True)
class _Held:
    client: Any
    uses: int = 0
    retired: bool = False  # the config no longer names it: closed at its last release


@dataclass(slots=True)
class _Clients:
    """One event loop's clients: those the config names, and every one still open
    (those plus the retired ones still in use), by `id()`; and the task that closes
    their idle connections (`_sweep`)."""

    current: dict[_Identity, _Held] = field(default_factory=dict)
    open: dict[int, _Held] = field(default_factory=dict)
    sweeping: asyncio.Task[None] | None = None


# Seconds between two passes that close the clients' expired idle connections: httpx's
# keep-alive expiry, which the clients keep.
SWEEP_SECONDS = 5.0


_clients: dict[asyncio.AbstractEventLoop, _Clients] = {}


def takes_proxy(provider: str) -> bool:
    """Whether a key's `proxy:` reaches the requests litellm sends to `provider`."""
    return provider in PROXIED_PROVIDERS


def client_arguments(key: Key, api_base: str | None) -> dict[str, Any]:
    """`{"client": ...}` for a key whose routes.yaml entry sets `proxy:`, and for every
    key of a provider litellm sends with an OpenAI SDK client (`openai`, `azure`,
    `perplexity`, ...); else nothing, and litellm picks its own client (and the
    environment's proxy). `api_base` is the one the call gives litellm (None: litellm's
    default).

    The OpenAI SDK's providers always get their own: litellm's OpenAI SDK clients follow
    redirects (the key would travel to wherever a Location points), and the router's
    patch (runtime.py) reaches only its AsyncHTTPHandler. Without a `proxy:` in
    routes.yaml, the key's proxy is the environment's as the loader read it, as for its
    same-format requests."""
    if key.provider not in PROXIED_PROVIDERS:
        return {}
    if not key.proxy_given and key.provider not in _OPENAI_SDK_PROVIDERS:
        return {}
    loop = asyncio.get_running_loop()
    clients = _clients.get(loop)
    if clients is None:
        clients = _clients[loop] = _Clients()
        clients.sweeping = loop.create_task(_sweep(clients), name="translated-idle-sweep")
    identity = _identity(key)
    held = clients.current.get(identity)
    if held is None:
        held = clients.current[identity] = _Held(_client(key, api_base))
        if held.client is not _NONE:
            clients.open[id(held.client)] = held
    if held.client is _NONE:
        return {}
    held.uses += 1
    return {"client": held.client}


async def release(client: Any) -> None:
    """Give back the use `client_arguments` took of `client` (None: it gave none)."""
    if client is None:
        return
    clients = _clients.get(asyncio.get_running_loop())
    held = clients.open.get(id(client)) if clients is not None else None
    if held is None or held.client is not client:
        return  # closed at shutdown already
    held.uses -= 1
    if held.uses <= 0 and held.retired:
        await _close(clients, held)


async def retire(keys: Iterable[Key]) -> None:
    """After a reload to a config of `keys`: the running loop's clients it no longer
    names (a key removed, or its secret, proxy or address changed) are closed, now or
    when the last request using one lets it go."""
    clients = _clients.get(asyncio.get_running_loop())
    if clients is None:
        return
    live = {_identity(key) for key in keys}
    for identity in [identity for identity in clients.current if identity not in live]:
        held = clients.current.pop(identity)
        held.retired = True
        if held.uses <= 0:
            await _close(clients, held)


def open_clients() -> list[Any]:
    """For tests: the running loop's clients not closed yet, retired ones included."""
    clients = _clients.get(asyncio.get_running_loop())
    return [held.client for held in clients.open.values()] if clients is not None else []


def _identity(key: Key) -> _Identity:
    return (key.name, key.provider, key.proxy, key.api_key, key.api_base, key.api_version)


async def _close(clients: _Clients, held: _Held) -> None:
    if clients.open.pop(id(held.client), None) is not None:
        await litellm_internals.close_client(held.client)


_NONE = object()  # held for a key that gets no client of ours: litellm picks its own


def _client(key: Key, api_base: str | None) -> Any:
    if key.provider in _HTTP_HANDLER_PROVIDERS:
        return litellm_internals.proxied_handler(key.proxy)
    if api_base is None and key.provider in _OPENAI_COMPATIBLE:
        # The SDK client is sent to its own base URL, not the call's: the provider's.
        api_base = litellm_internals.provider_api_base(key.provider)
        if api_base is None:  # pragma: no cover - every provider listed has one
            return _NONE
    return litellm_internals.proxied_openai_client(
        key.proxy,
        azure=key.provider == "azure",
        api_key=key.api_key,
        api_base=api_base,
        api_version=key.api_version,
    )


async def _sweep(clients: _Clients) -> None:
    """Close the open clients' expired idle connections every SWEEP_SECONDS: httpcore
    closes them only when a pool is next used (litellm_internals.close_expired)."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        for held in list(clients.open.values()):
            try:
                await litellm_internals.close_expired(held.client)
            except Exception:  # a pass that fails leaves them for the next one
                log.warning("translated_idle_sweep_failed", exc_info=True)


async def close() -> None:
    """Close the running loop's clients (their connections to proxies and providers),
    and forget those of closed loops: their connections died with their loop, and
    closing them now would schedule callbacks on it."""
    clients = _clients.pop(asyncio.get_running_loop(), None)
    for loop in [loop for loop in _clients if loop.is_closed()]:
        del _clients[loop]
    if clients is not None:
        if clients.sweeping is not None:
            # Awaited: a sweep cancelled inside its close would leave the connections it
            # took out of a pool unclosed, and the pool's own close would not see them.
            clients.sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clients.sweeping
        for held in list(clients.open.values()):
            await _close(clients, held)
