"""routes.yaml -> a frozen `Config`, once at startup, and the table `llm-router check` prints.

Every error names file, line and field path:
`routes.yaml:14: models.gpt-4o.routes[1].key: unknown key 'openai-bakup'`.
A key whose `${VAR}` is unset is skipped rather than fatal, so one missing credential
does not stop the router from serving the rest; the skip is reported in
`Config.skipped_keys` and `Config.warnings`. No message ever quotes a key.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from router.config import catalog
from router.config.fields import Expansion, Field, read_document, suggestion, unset_reason
from router.config.headers import parse_headers
from router.config.models import parse_budget, parse_models
from router.config.proxies import ProxyEnvironment, ProxyError, parse_proxy
from router.config.table import format_route_table, mask_key
from router.errors import ConfigError
from router.types import (
    DEFAULT_API_BASES,
    DISTRIBUTION,
    TRANSLATE_EXTRA,
    Config,
    FailoverSettings,
    Key,
    Limits,
    ModelSpec,
    Operation,
    Proxy,
    ServerSettings,
    SkippedKey,
    StateSettings,
    Timeouts,
    TraceSettings,
)
from router.upstream.providers import PROVIDERS
from router.upstream.translate import translator_for
from router.upstream.translate.egress import takes_proxy
from router.upstream.translate.runtime import available as translate_available
from router.upstream.translate.runtime import litellm_providers

__all__ = ["format_route_table", "is_loopback", "load_config", "mask_key", "parse_config"]


_TOP_FIELDS = (
    *("server", "keys", "models", "timeouts", "failover", "limits", "state"),
    "telemetry",
)
_SERVER_FIELDS = tuple(f.name for f in dataclasses.fields(ServerSettings))
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
_STATE_FIELDS = ("backend", "url", "prefix", "snapshot")
_STATE_BACKENDS = ("memory", "redis")
_TELEMETRY_FIELDS = ("traces",)
_TRACES_FIELDS = ("endpoint", "sample_rate")
_Settings = TypeVar("_Settings", Timeouts, FailoverSettings, Limits)


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{os.path.basename(source)}: not UTF-8 text") from None
    config = parse_config(text, source=source, environ=os.environ if environ is None else environ)
    catalog.forget()  # the loaded config holds what it needs of the model data
    return config


def parse_config(text: str, *, source: str, environ: Mapping[str, str]) -> Config:
    document = read_document(text, source=source, environ=environ)
    top = document.fields(_TOP_FIELDS, required=("keys", "models"))
    warnings: list[str] = []
    server = _server(top["server"], warnings) if "server" in top else ServerSettings()
    keys, skipped = _keys(top["keys"], warnings)
    timeouts = _settings(top.get("timeouts"), Timeouts)
    models = parse_models(top["models"], keys, skipped, warnings, timeouts)
    warnings.extend(_translated_proxy_warnings(models))
    failover = _settings(top.get("failover"), FailoverSettings)
    limits = _settings(top.get("limits"), Limits)
    state = _state(top["state"]) if "state" in top else StateSettings()
    traces = _traces(top["telemetry"]) if "telemetry" in top else TraceSettings()
    if not any(spec.routes for spec in models.values()):
        reasons = "; ".join(f"{key.name}: {key.reason}" for key in skipped.values())
        raise ConfigError(
            f"{document.source}: no usable route: every key the routes use is skipped ({reasons})"
        )
    return Config(
        source=source,
        server=server,
        keys=MappingProxyType(keys),
        models=MappingProxyType(models),
        timeouts=timeouts,
        failover=failover,
        limits=limits,
        state=state,
        traces=traces,
        skipped_keys=tuple(skipped.values()),
        warnings=tuple(warnings),
    )


def _server(at: Field, warnings: list[str]) -> ServerSettings:
    found = at.fields(_SERVER_FIELDS)
    values: dict[str, Any] = {}
    if "host" in found:
        values["host"] = found["host"].string()
        if not values["host"]:
            raise found["host"].error("must not be empty (0.0.0.0 listens on every interface)")
    if "port" in found:
        values["port"] = found["port"].integer(minimum=0, maximum=65535)
    if "client_keys" in found:
        values["client_keys"] = _client_keys(found["client_keys"], warnings)
    if "admin_keys" in found:
        values["admin_keys"] = _client_keys(found["admin_keys"], warnings, kind="admin")
    if "allow_unauthenticated" in found:
        values["allow_unauthenticated"] = found["allow_unauthenticated"].boolean()
    if "max_body_bytes" in found:
        values["max_body_bytes"] = found["max_body_bytes"].integer(minimum=1)
    for name in ("header_timeout", "body_timeout", "idle_timeout"):
        if name in found:
            values[name] = found[name].number(minimum=0.001)
    if "max_connections" in found:
        values["max_connections"] = found["max_connections"].integer(minimum=1)
    for name in ("drain_grace", "drain_timeout"):
        if name in found:
            values[name] = found[name].number(minimum=0)
    if "allowed_hosts" in found:
        values["allowed_hosts"] = tuple(_host(entry) for entry in found["allowed_hosts"].items())
    if "allowed_origins" in found:
        values["allowed_origins"] = tuple(
            _origin(entry) for entry in found["allowed_origins"].items()
        )
    server = ServerSettings(**values)
    if not (server.client_keys or server.allow_unauthenticated or is_loopback(server.host)):
        raise found["host"].error(
            f"{server.host} is not a loopback address, so anyone who can reach it could use "
            "your keys; set server.client_keys or server.allow_unauthenticated: true"
        )
    return server


def _host(at: Field) -> str:
    """A host name or address, any port: `router.example.com`, `10.0.0.5`, `::1`, or `*`."""
    host = at.string().strip().lower().rstrip(".")
    if host == "*":
        return host
    if not host or "/" in host or (host.count(":") == 1 and not host.startswith("[")):
        raise at.error(f"expected a host name or address without scheme or port, got {host!r}")
    return host.strip("[]")


def _origin(at: Field) -> str:
    """`scheme://host[:port]` as browsers send it in `Origin`, or `*`."""
    origin = at.string().strip().lower().rstrip("/")
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise at.error(f"expected an origin like https://app.example.com, got {origin!r}")
    return origin


def _client_keys(at: Field, warnings: list[str], kind: str = "client") -> tuple[str, ...]:
    """server.client_keys or server.admin_keys (`kind`): `${VAR}` entries expanded, unset
    ones dropped with a warning; all of them unset refuses to start."""
    kept: list[str] = []
    dropped: list[str] = []
    for entry in at.items():
        expansion = entry.expand()
        if expansion.unset:
            dropped.append(unset_reason(expansion.unset))
            warnings.append(f"{entry.path} is dropped: {dropped[-1]}")
        elif not expansion.value:
            article = "an" if kind == "admin" else "a"
            raise entry.error(f"{article} {kind} key must not be empty")
        else:
            kept.append(expansion.value)
    if dropped and not kept:
        # The operator asked for auth; starting open because a variable is missing
        # would silently undo that.
        raise at.error(
            f"every {kind} key is unset ({'; '.join(dropped)}); "
            f"refusing to start without {kind} auth"
        )
    return tuple(kept)


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (bracketed or not), in any case."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _keys(at: Field, warnings: list[str]) -> tuple[dict[str, Key], dict[str, SkippedKey]]:
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


def _translated_proxy_warnings(models: Mapping[str, ModelSpec]) -> list[str]:
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


def _state(at: Field) -> StateSettings:
    found = at.fields(_STATE_FIELDS)
    backend = found["backend"].string() if "backend" in found else "memory"
    if backend not in _STATE_BACKENDS:
        raise found["backend"].error(f"must be memory or redis, got {backend!r}")
    if backend == "memory":
        for name in ("url", "prefix"):
            if name in found:
                raise found[name].error("applies to backend: redis only")
        snapshot = found["snapshot"].string() if "snapshot" in found else ""
        if "snapshot" in found and not snapshot:
            raise found["snapshot"].error("must be a file path")
        return StateSettings(snapshot=snapshot)
    if "snapshot" in found:
        raise found["snapshot"].error(
            "applies to backend: memory only (with redis, a restarted replica reads Redis)"
        )
    if "url" not in found:
        raise at.error('backend redis needs url (for example url: "${REDIS_URL}")')
    url = found["url"].string()
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise found["url"].error("expected a redis://, rediss:// or unix:// URL")
    if importlib.util.find_spec("redis") is None:
        raise found["backend"].error(
            f"backend redis needs the redis package: pip install '{DISTRIBUTION}[redis]'"
        )
    if "prefix" not in found:
        return StateSettings(backend="redis", url=url)
    prefix = found["prefix"].string()
    if not prefix:
        raise found["prefix"].error("must not be empty")
    return StateSettings(backend="redis", url=url, prefix=prefix)


def _traces(at: Field) -> TraceSettings:
    """telemetry.traces: {endpoint, sample_rate}; the OTEL_* variables fill what is unset
    (telemetry/tracing.py)."""
    traces = at.fields(_TELEMETRY_FIELDS).get("traces")
    if traces is None:
        return TraceSettings()
    found = traces.fields(_TRACES_FIELDS)
    endpoint = found["endpoint"].string() if "endpoint" in found else ""
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise found["endpoint"].error(
            "expected an http:// or https:// URL (an OTLP/HTTP collector, e.g. "
            "http://localhost:4318)"
        )
    rate = None
    if "sample_rate" in found:
        rate = found["sample_rate"].number(minimum=0)
        if rate > 1:
            raise found["sample_rate"].error(f"must be a fraction up to 1, got {rate:g}")
    return TraceSettings(endpoint=endpoint, sample_rate=rate)


def _settings(at: Field | None, kind: type[_Settings]) -> _Settings:
    if at is None:
        return kind()
    declared = {f.name: f.type for f in dataclasses.fields(kind)}
    found = at.fields(declared)
    # A count or a size is an integer; anything else (seconds) any positive number.
    values = {
        name: field.integer(minimum=1) if declared[name] == "int" else field.positive_number()
        for name, field in found.items()
        if name != "max_wait"
    }
    if "max_wait" in found:  # 0 turns waiting off
        values["max_wait"] = found["max_wait"].number(minimum=0)
    rate = found.get("breaker_failure_rate")
    if rate is not None and values["breaker_failure_rate"] > 1:
        raise rate.error(f"must be a fraction up to 1, got {values['breaker_failure_rate']:g}")
    return kind(**values)
