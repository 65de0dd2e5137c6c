"""The `keys:` section of routes.yaml: each key's provider, address, secret, proxy and
headers, checked; a key whose `${VAR}` is unset is skipped with the reason, not fatal."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

from router.config.fields import Expansion, Field, suggestion, unset_reason
from router.config.headers import parse_headers
from router.config.models import parse_budget
from router.config.proxies import ProxyEnvironment, ProxyError, parse_proxy
from router.types import (
    DEFAULT_API_BASES,
    TRANSLATE_EXTRA,
    Key,
    ModelSpec,
    Operation,
    Proxy,
    SkippedKey,
)
from router.upstream.providers import PROVIDERS
from router.upstream.translate import translator_for
from router.upstream.translate.egress import takes_proxy
from router.upstream.translate.runtime import available as translate_available
from router.upstream.translate.runtime import litellm_providers

__all__ = ["parse_keys", "translated_proxy_warnings"]

_KEY_FIELDS = (
    "provider",
    "api_base",
    "api_key",
    "api_version",
    "budget",
    "stream_usage",
    "proxy",
    "headers",
)


def parse_keys(at: Field, warnings: list[str]) -> tuple[dict[str, Key], dict[str, SkippedKey]]:
    keys: dict[str, Key] = {}
    skipped: dict[str, SkippedKey] = {}
    proxies = ProxyEnvironment.read(at.environ)  # read once, here, for every key
    for name, entry in at.named():
        if "/" in name or any(char.isspace() or not char.isprintable() for char in name):
            raise entry.error(
                "a key name may not hold '/', spaces or control characters "
                "(route ids are key/model, sent in the x-router-route header)"
            )
        found = entry.fields(_KEY_FIELDS, required=("provider", "api_key"))
        provider = _provider(found["provider"])
        api_base = _api_base(found.get("api_base"), provider, entry)
        api_version = _api_version(found.get("api_version"), provider)
        stream_usage = _stream_usage(found.get("stream_usage"), provider)
        api_key = found["api_key"].expand()
        proxy = found["proxy"].expand() if "proxy" in found else None
        proxy_unset = proxy.unset if proxy is not None else ()
        headers = parse_headers(found["headers"]) if "headers" in found else None
        headers_unset = headers.unset if headers is not None else ()
        unset = tuple(dict.fromkeys(api_base.unset + api_key.unset + proxy_unset + headers_unset))
        if unset:
            skipped[name] = SkippedKey(name=name, reason=unset_reason(unset))
            warnings.append(
                f"{entry.path} is skipped: {skipped[name].reason}; its routes are left out"
            )
            continue
        if any(char.isspace() or not char.isprintable() for char in api_key.value):
            # Would fail every request at the header; say so once, here, without the key.
            raise found["api_key"].error(
                "the key holds whitespace or a control character "
                "(a line end copied from a file or an echo?)"
            )
        if api_key.value and not api_key.referenced:
            warnings.append(
                f"{entry.path}.api_key is a literal key in {entry.source}; "
                "prefer ${VAR} so the file holds no secret"
            )
        keys[name] = Key(
            name=name,
            provider=provider,
            api_base=api_base.value,
            api_key=api_key.value,
            api_version=api_version,
            budget=parse_budget(found["budget"]) if "budget" in found else None,
            stream_usage=stream_usage,
            proxy=_proxy(found.get("proxy"), proxy, provider, api_base.value, proxies, entry),
            proxy_given=proxy is not None,
            headers=MappingProxyType(headers.headers if headers is not None else {}),
            header_secrets=headers.secrets if headers is not None else (),
        )
    return keys, skipped


def _proxy(
    at: Field | None,
    given: Expansion | None,
    provider: str,
    api_base: str,
    proxies: ProxyEnvironment,
    entry: Field,
) -> Proxy | None:
    """The proxy this key is reached through: `proxy:` (a URL or `none`; litellm's calls
    take it too), else the environment's for api_base (the router's own client only:
    litellm reads the environment itself)."""
    if at is None or given is None:
        if provider not in PROVIDERS:
            return None  # only ever reached through litellm
        try:
            return proxies.proxy_for(api_base)
        except ProxyError as exc:
            raise entry.error(f"{exc}; set this key's proxy: to an http:// URL or none") from None
    value = given.value
    if value.strip().lower() == "none":
        return None
    try:
        return parse_proxy(value)
    except ProxyError as exc:
        raise at.error(f"the proxy {exc}") from None


def translated_proxy_warnings(models: Mapping[str, ModelSpec]) -> list[str]:
    """A key's `proxy:` that some of its requests do not take: those litellm sends for
    providers whose litellm handler takes no client of ours (translate/egress.py)."""
    translated = {
        (route.key.name, operation)
        for spec in models.values()
        for operation, routes in spec.routes_for.items()
        for route in routes
        if route.key.proxy_given
        and not takes_proxy(route.key.provider)
        and translator_for(route.key.provider, operation)
    }
    return [
        f"keys.{name}.proxy does not apply to its {operation} requests, which go through "
        "litellm: litellm follows HTTPS_PROXY/NO_PROXY from the environment instead"
        for name, operation in sorted(translated)
    ]


def _provider(at: Field) -> str:
    # DEFAULT_API_BASES lists the providers the router speaks itself; any other provider
    # litellm knows is reached through translation (its names read without importing it).
    provider = at.string()
    if provider not in PROVIDERS and not translate_available():
        # Without litellm (the translate extra) only the providers spoken natively work.
        native = ", ".join(sorted(PROVIDERS))
        hint = suggestion(provider, PROVIDERS)
        if hint:
            raise at.error(f"unknown provider '{provider}'{hint}; supported: {native}")
        raise at.error(
            f"provider {provider} needs translation, and litellm is not installed: "
            f"{TRANSLATE_EXTRA} (the router speaks {native} itself)"
        )
    if provider not in DEFAULT_API_BASES and provider not in litellm_providers():
        known = sorted(DEFAULT_API_BASES)
        hint = suggestion(provider, [*known, *litellm_providers()])
        raise at.error(
            f"unknown provider '{provider}'{hint}; supported: {', '.join(known)}, "
            "or any provider litellm knows"
        )
    return provider


def _api_base(at: Field | None, provider: str, entry: Field) -> Expansion:
    if at is None:
        default = DEFAULT_API_BASES.get(provider, "")  # "": litellm's own default
        if default is None:
            raise entry.error(
                f"provider {provider} needs api_base (for azure: https://NAME.openai.azure.com)"
            )
        return Expansion(default)
    expansion = at.expand()
    if expansion.unset:
        return expansion
    base = expansion.value.rstrip("/")
    url = urlsplit(base)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise at.error("must be a URL starting with http:// or https://")
    if provider == "anthropic" and url.path.endswith("/v1"):
        # Anthropic's SDK convention: the host only; the router adds /v1/messages.
        raise at.error("for provider anthropic, give the host only, without /v1")
    return dataclasses.replace(expansion, value=base)


def _api_version(at: Field | None, provider: str) -> str | None:
    if at is None:
        return None
    if provider != "azure":
        raise at.error("api_version applies to provider azure only")
    return at.string()


def _stream_usage(at: Field | None, provider: str) -> bool:
    if at is None:
        return True
    native = PROVIDERS.get(provider)
    if native is None or Operation.CHAT not in native.operations:
        # Chat streams to this provider are translated; the translation asks for usage.
        passed = [name for name, p in PROVIDERS.items() if Operation.CHAT in p.operations]
        raise at.error(f"stream_usage applies to providers {' and '.join(passed)} only")
    return at.boolean()
