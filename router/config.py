"""routes.yaml -> a frozen `Config`, once at startup, and the table `llm-router check` prints.

Every error names file, line and field path:
`routes.yaml:14: models.gpt-4o.routes[1].key: unknown key 'openai-bakup'`.
A key whose `${VAR}` is unset is skipped rather than fatal, so one missing credential
does not stop the router from serving the rest; the skip is reported in
`Config.skipped_keys` and `Config.warnings`. No message ever quotes a key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from router.config_yaml import Expansion, Field, read_document, suggestion, unset_reason
from router.errors import ConfigError
from router.types import (
    DEFAULT_API_BASES,
    Config,
    FailoverSettings,
    Key,
    ModelSpec,
    Route,
    ServerSettings,
    SkippedKey,
    Timeouts,
)

__all__ = ["format_route_table", "load_config", "mask_key", "parse_config"]

_TOP_FIELDS = ("server", "keys", "models", "timeouts", "failover")
_SERVER_FIELDS = tuple(f.name for f in dataclasses.fields(ServerSettings))
_KEY_FIELDS = ("provider", "api_base", "api_key", "api_version")
_MODEL_FIELDS = ("routes", "fallback")
_ROUTE_FIELDS = ("key", "model", "priority", "weight")
_FAILOVER_COUNTS = ("max_attempts", "breaker_failures")  # every other setting is seconds
_TABLE_COLUMNS = ("priority", "weight", "key", "provider", "upstream model", "api_base", "api_key")

_Settings = TypeVar("_Settings", Timeouts, FailoverSettings)


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
    return parse_config(text, source=source, environ=os.environ if environ is None else environ)


def parse_config(text: str, *, source: str, environ: Mapping[str, str]) -> Config:
    document = read_document(text, source=source, environ=environ)
    top = document.fields(_TOP_FIELDS, required=("keys", "models"))
    warnings: list[str] = []
    server = _server(top["server"], warnings) if "server" in top else ServerSettings()
    keys, skipped = _keys(top["keys"], warnings)
    models = _models(top["models"], keys, skipped, warnings)
    timeouts = _settings(top.get("timeouts"), Timeouts)
    failover = _settings(top.get("failover"), FailoverSettings)
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
    if "allow_unauthenticated" in found:
        values["allow_unauthenticated"] = found["allow_unauthenticated"].boolean()
    if "max_body_bytes" in found:
        values["max_body_bytes"] = found["max_body_bytes"].integer(minimum=1)
    server = ServerSettings(**values)
    if not (server.client_keys or server.allow_unauthenticated or _is_loopback(server.host)):
        raise found["host"].error(
            f"{server.host} is not a loopback address, so anyone who can reach it could use "
            "your keys; set server.client_keys or server.allow_unauthenticated: true"
        )
    return server


def _client_keys(at: Field, warnings: list[str]) -> tuple[str, ...]:
    kept: list[str] = []
    dropped: list[str] = []
    for entry in at.items():
        expansion = entry.expand()
        if expansion.unset:
            dropped.append(unset_reason(expansion.unset))
            warnings.append(f"{entry.path} is dropped: {dropped[-1]}")
        elif not expansion.value:
            raise entry.error("a client key must not be empty")
        else:
            kept.append(expansion.value)
    if dropped and not kept:
        # The operator asked for auth; starting open because a variable is missing
        # would silently undo that.
        raise at.error(
            f"every client key is unset ({'; '.join(dropped)}); "
            "refusing to start without client auth"
        )
    return tuple(kept)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _keys(at: Field, warnings: list[str]) -> tuple[dict[str, Key], dict[str, SkippedKey]]:
    keys: dict[str, Key] = {}
    skipped: dict[str, SkippedKey] = {}
    for name, entry in at.named():
        if "/" in name or any(char.isspace() for char in name):
            raise entry.error("a key name may not hold '/' or spaces (route ids are key/model)")
        found = entry.fields(_KEY_FIELDS, required=("provider", "api_key"))
        provider = _provider(found["provider"])
        api_base = _api_base(found.get("api_base"), provider, entry)
        api_version = _api_version(found.get("api_version"), provider)
        api_key = found["api_key"].expand()
        unset = tuple(dict.fromkeys(api_base.unset + api_key.unset))
        if unset:
            skipped[name] = SkippedKey(name=name, reason=unset_reason(unset))
            warnings.append(
                f"{entry.path} is skipped: {skipped[name].reason}; its routes are left out"
            )
            continue
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
        )
    return keys, skipped


def _provider(at: Field) -> str:
    # DEFAULT_API_BASES is the one table of providers: adding one there makes it valid here.
    provider = at.string()
    if provider not in DEFAULT_API_BASES:
        supported = ", ".join(sorted(DEFAULT_API_BASES))
        hint = suggestion(provider, DEFAULT_API_BASES)
        raise at.error(f"unknown provider '{provider}'{hint}; supported: {supported}")
    return provider


def _api_base(at: Field | None, provider: str, entry: Field) -> Expansion:
    if at is None:
        default = DEFAULT_API_BASES[provider]
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


def _models(
    at: Field, keys: Mapping[str, Key], skipped: Mapping[str, SkippedKey], warnings: list[str]
) -> dict[str, ModelSpec]:
    entries = at.named()
    if not entries:
        raise at.error("no models are defined")
    names = {name for name, _ in entries}
    routes: dict[str, tuple[Route, ...]] = {}
    listed: dict[str, int] = {}  # routes written in the file, skipped ones included
    fallbacks: dict[str, tuple[str, ...]] = {}
    fallback_at: dict[str, Field] = {}
    for name, entry in entries:
        found = entry.fields(_MODEL_FIELDS)
        route_entries = found["routes"].items() if "routes" in found else []
        routes[name] = _routes(route_entries, keys, skipped)
        listed[name] = len(route_entries)
        fallbacks[name] = _fallback(found["fallback"], names) if "fallback" in found else ()
        if "fallback" in found:
            fallback_at[name] = found["fallback"]
        if not route_entries and not fallbacks[name]:
            raise entry.error("needs at least one route or a fallback")
    _reject_cycles(fallbacks, fallback_at)
    specs = {
        name: ModelSpec(
            name=name,
            routes=routes[name],
            fallback=fallbacks[name],
            chain=_chain(name, fallbacks),
        )
        for name in routes
    }
    for spec in specs.values():
        if note := _unserved_warning(spec, specs, listed[spec.name] > 0):
            warnings.append(note)
    return specs


def _routes(
    entries: list[Field], keys: Mapping[str, Key], skipped: Mapping[str, SkippedKey]
) -> tuple[Route, ...]:
    """The model's routes in file order (the policy applies priority), less skipped keys."""
    usable: list[Route] = []
    first: dict[str, str] = {}
    for entry in entries:
        found = entry.fields(_ROUTE_FIELDS, required=("key", "model"))
        key_name = found["key"].string()
        if key_name not in keys and key_name not in skipped:
            raise found["key"].error(f"unknown key '{key_name}'")
        model = found["model"].string()
        if not model:
            raise found["model"].error("must not be empty")
        # Health state is kept per route id, so two routes with one id would share it.
        route_id = f"{key_name}/{model}"
        if route_id in first:
            raise entry.error(f"route {route_id} is already listed at {first[route_id]}")
        first[route_id] = entry.path
        priority = found["priority"].integer(minimum=1) if "priority" in found else 1
        weight = found["weight"].positive_number() if "weight" in found else 1.0
        if key_name in keys:
            usable.append(Route(key=keys[key_name], model=model, priority=priority, weight=weight))
    return tuple(usable)


def _fallback(at: Field, models: Collection[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for entry in at.items():
        name = entry.string()
        if name not in models:
            raise entry.error(f"unknown model '{name}'")
        if name in chosen:
            raise entry.error(f"'{name}' is listed twice")
        chosen.append(name)
    return tuple(chosen)


def _reject_cycles(fallbacks: Mapping[str, tuple[str, ...]], where: Mapping[str, Field]) -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise where[cycle[0]].error(f"fallback cycle {' -> '.join(cycle)}")
        if name in done:
            return
        path.append(name)
        for target in fallbacks[name]:
            visit(target, path)
        path.pop()
        done.add(name)

    for name in fallbacks:
        visit(name, [])


def _chain(name: str, fallbacks: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """`name`, then every model reachable through fallback: depth-first, in list order, once."""
    chain: list[str] = []
    pending = [name]
    while pending:
        model = pending.pop()
        if model not in chain:
            chain.append(model)
            pending.extend(reversed(fallbacks[model]))
    return tuple(chain)


def _unserved_warning(spec: ModelSpec, specs: Mapping[str, ModelSpec], listed: bool) -> str | None:
    if spec.routes:
        return None
    rest = spec.chain[1:]
    if any(specs[name].routes for name in rest):
        # A model written as an alias of its fallbacks is served as intended: say nothing.
        if not listed:
            return None
        return f"models.{spec.name}: every route uses a skipped key; requests go to its fallbacks"
    if not rest:
        return (
            f"models.{spec.name}: every route uses a skipped key and there is no fallback; "
            "requests for it will get 503"
        )
    chain = " -> ".join(spec.chain)
    return f"models.{spec.name}: no usable route in {chain}; requests for it will get 503"


def _settings(at: Field | None, kind: type[_Settings]) -> _Settings:
    if at is None:
        return kind()
    found = at.fields([f.name for f in dataclasses.fields(kind)])
    values = {
        name: field.integer(minimum=1) if name in _FAILOVER_COUNTS else field.positive_number()
        for name, field in found.items()
    }
    return kind(**values)


def mask_key(secret: str) -> str:
    """`sk-...abcd`: a recognisable prefix and the last four characters, never the key.

    The prefix (up to the first '-' within 8 characters) is shown only while at least
    half the key stays hidden, so a short key is not printed nearly whole.
    """
    if len(secret) < 12:
        return "***"
    dash = secret.find("-", 0, 8)
    prefix = secret[: dash + 1]
    if len(prefix) + 4 > len(secret) // 2:
        prefix = ""
    return f"{prefix}...{secret[-4:]}"


def format_route_table(config: Config) -> str:
    """What `llm-router check` prints: plain text, keys masked."""
    server = config.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    lines = [
        f"config  {config.source}",
        f"listen  {host}:{server.port}",
        f"auth    {_auth(server)}",
    ]
    rows = {
        name: [_route_row(route) for route in spec.routes] for name, spec in config.models.items()
    }
    every_row = [_TABLE_COLUMNS, *itertools.chain.from_iterable(rows.values())]
    widths = [max(len(cell) for cell in column) for column in zip(*every_row, strict=True)]
    for spec in config.models.values():
        chain = f"fallback chain: {' -> '.join(spec.chain)}" if spec.fallback else "no fallback"
        lines += ["", f"model {spec.name}  ({chain})"]
        if not rows[spec.name]:
            lines.append("  (no usable route)")
            continue
        for row in [_TABLE_COLUMNS, *rows[spec.name]]:
            lines.append("  " + "  ".join(map(str.ljust, row, widths)).rstrip())
    if config.skipped_keys:
        lines += [
            "",
            "skipped keys",
            *(f"  {key.name}: {key.reason}" for key in config.skipped_keys),
        ]
    if config.warnings:
        lines += ["", "warnings", *(f"  - {warning}" for warning in config.warnings)]
    return "\n".join(lines) + "\n"


def _auth(server: ServerSettings) -> str:
    if server.client_keys:
        count = len(server.client_keys)
        return f"on ({count} client key{'s' if count != 1 else ''})"
    if server.allow_unauthenticated:
        return "off (server.allow_unauthenticated: true)"
    return "off (loopback only)"


def _route_row(route: Route) -> tuple[str, ...]:
    key = route.key
    return (
        str(route.priority),
        f"{route.weight:g}",
        key.name,
        key.provider,
        route.model,
        key.api_base,
        mask_key(key.api_key),
    )
