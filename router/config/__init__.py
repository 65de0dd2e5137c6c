"""routes.yaml -> a frozen `Config`, once at startup, and the table `llm-router check` prints.

Every error names file, line and field path:
`routes.yaml:14: models.gpt-5.4.routes[1].key: unknown key 'openai-bakup'`.
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
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from router.config import catalog
from router.config.fields import Field, read_document, unset_reason
from router.config.keys import parse_keys, translated_proxy_warnings
from router.config.models import parse_models
from router.config.retirements import retirement_warnings
from router.config.table import format_route_table, mask_key
from router.errors import ConfigError
from router.files import read_regular
from router.types import (
    DISTRIBUTION,
    Config,
    FailoverSettings,
    Limits,
    ServerSettings,
    StateSettings,
    Timeouts,
    TraceSettings,
)

__all__ = ["format_route_table", "is_loopback", "load_config", "mask_key", "parse_config"]


# A routes.yaml of a thousand routes is about 100 KB.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_TOP_FIELDS = (
    *("server", "keys", "models", "timeouts", "failover", "limits", "state"),
    "telemetry",
)
_SERVER_FIELDS = tuple(f.name for f in dataclasses.fields(ServerSettings))
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
        text = read_regular(source, MAX_CONFIG_BYTES).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{os.path.basename(source)}: not UTF-8 text") from None
    config = parse_config(text, source=source, environ=os.environ if environ is None else environ)
    catalog.forget()  # the loaded config holds what it needs of the model data
    return config


def parse_config(text: str, *, source: str, environ: Mapping[str, str]) -> Config:
    try:
        return _parse(text, source=source, environ=environ)
    except RecursionError:
        # Thousands of nested brackets or mappings: nothing a config needs, and the
        # parser's or the field walk's recursion gives out first.
        name = os.path.basename(source) or source
        raise ConfigError(f"{name}: nested too deeply to be a routes.yaml") from None


def _parse(text: str, *, source: str, environ: Mapping[str, str]) -> Config:
    document = read_document(text, source=source, environ=environ)
    top = document.fields(_TOP_FIELDS, required=("keys", "models"))
    warnings: list[str] = []
    server = _server(top["server"], warnings) if "server" in top else ServerSettings()
    keys, skipped = parse_keys(top["keys"], warnings)
    timeouts = _settings(top.get("timeouts"), Timeouts)
    models = parse_models(top["models"], keys, skipped, warnings, timeouts)
    warnings.extend(translated_proxy_warnings(models))
    warnings.extend(retirement_warnings(models))
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
    for name in ("max_body_bytes", "max_body_bytes_total"):
        if name in found:
            values[name] = found[name].integer(minimum=1)
    if "max_header_bytes" in found:
        values["max_header_bytes"] = found["max_header_bytes"].integer(minimum=1024)
    for name in ("header_timeout", "body_timeout", "send_timeout", "idle_timeout"):
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
    if "max_body_bytes_total" not in found:
        # Unset: room for two of the largest bodies at least, so that a config that
        # raised max_body_bytes past the default total still starts.
        total = max(server.max_body_bytes_total, 2 * server.max_body_bytes)
        server = dataclasses.replace(server, max_body_bytes_total=total)
    elif server.max_body_bytes_total < server.max_body_bytes:
        raise found["max_body_bytes_total"].error(
            f"max_body_bytes_total ({server.max_body_bytes_total}) is less than "
            f"max_body_bytes ({server.max_body_bytes}): a body of the largest size allowed "
            "could never be taken"
        )
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
            if len(expansion.value) < _MIN_KEY_LENGTH:
                warnings.append(_short_key_warning(entry.path, len(expansion.value)))
    if dropped and not kept:
        # The operator asked for auth; starting open because a variable is missing
        # would silently undo that.
        raise at.error(
            f"every {kind} key is unset ({'; '.join(dropped)}); "
            f"refusing to start without {kind} auth"
        )
    return tuple(kept)


# A client or admin key shorter than this can be guessed; one under the redactor's
# shortest secret (6, wire/redact.py) is not even found in a log line to be replaced.
_MIN_KEY_LENGTH = 16


def _short_key_warning(path: str, length: int) -> str:
    unredacted = " and is never redacted from logs" if length < 6 else ""
    return (
        f"{path} is {length} characters long: a key that short can be guessed{unredacted}; "
        f"use {_MIN_KEY_LENGTH} or more (openssl rand -hex 16)"
    )


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (bracketed or not), in any case."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    _check_redis_url(found["url"], url)
    if "prefix" not in found:
        return StateSettings(backend="redis", url=url)
    prefix = found["prefix"].string()
    if not prefix:
        raise found["prefix"].error("must not be empty")
    if any(char in prefix for char in "*?[]\\"):
        # The prefix is matched as a pattern when the state is read back (SCAN MATCH):
        # `team?` would read `teamB`'s state too.
        raise found["prefix"].error("must not hold * ? [ ] or \\: it is matched as a pattern")
    return StateSettings(backend="redis", url=url, prefix=prefix)


def _check_redis_url(at: Field, url: str) -> None:
    """A URL redis-py cannot take (a port that is no number, an option that is no
    value) is refused here, with its field, not found when the store starts. The URL
    itself is not echoed: it may hold a password."""
    from redis.asyncio.connection import parse_url  # only for backend redis

    try:
        parse_url(url)
    except (ValueError, TypeError) as exc:
        reason = str(exc).replace(url, "<url>")[:200]
        raise at.error(f"is not a Redis URL redis-py can use ({reason})") from None
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        # redis-py takes a database that is no number as database 0, another pool's.
        raise at.error(f"the database after the host is a number (redis://host:6379/0), "
                       f"not {database[:40]!r}")  # fmt: skip


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
