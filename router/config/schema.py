"""routes.yaml's JSON Schema, for editors (the YAML language server), built from the loader.

The field names come from the very tables the loader checks (`_TOP_FIELDS`,
`_KEY_FIELDS`, ... and the settings dataclasses), and `build_schema` refuses to build
when a table names a field this module gives no type: a field added to the loader
without one here fails the schema test instead of silently missing from editors.
The committed copy, router/config/routes.schema.json, is what `llm-router schema`
prints; regenerate it with `python -m router.config.schema > router/config/routes.schema.json`.

The loader stays the authority (cross-references such as a route's key, fallback
cycles and the rules that need the environment are its alone); the schema catches
what can be seen in one file: unknown fields, types, enums and bounds.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Collection, Mapping
from importlib import resources
from typing import Any

from router.config import (
    _SERVER_FIELDS,
    _STATE_BACKENDS,
    _STATE_FIELDS,
    _TELEMETRY_FIELDS,
    _TOP_FIELDS,
    _TRACES_FIELDS,
)
from router.config.fallbacks import CHEAPER
from router.config.headers import HEADER_NAME, REFUSED
from router.config.keys import _KEY_FIELDS
from router.config.models import (
    _BUDGET_FIELDS,
    _CACHE_PRICE_FIELDS,
    _MODEL_FIELDS,
    _PRICE_FIELDS,
    _ROUTE_FIELDS,
    ROUTE_TIMEOUT_FIELDS,
    TIMEOUT_FIELDS,
)
from router.types import (
    CAPABILITY_NAMES,
    DEFAULT_API_BASES,
    FailoverSettings,
    Limits,
    ServerSettings,
    StateSettings,
    Timeouts,
)

SCHEMA_FILE = "routes.schema.json"
Schema = dict[str, Any]

# `port: ${PORT:-4000}` is read as the int 4000, so a number, an integer or a boolean
# may also be written as one whole variable reference.
_VARIABLE: Schema = {
    "type": "string",
    "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}$]*)?\}$",
}


def _typed(schema: Schema) -> Schema:
    return {"anyOf": [schema, _VARIABLE]}


def _integer(minimum: int, maximum: int | None = None) -> Schema:
    bounds: Schema = {"minimum": minimum}
    if maximum is not None:
        bounds["maximum"] = maximum
    return _typed({"type": "integer", **bounds})


def _number(minimum: float) -> Schema:
    return _typed({"type": "number", "minimum": minimum})


def _positive() -> Schema:
    return _typed({"type": "number", "exclusiveMinimum": 0})


_BOOLEAN = _typed({"type": "boolean"})
# No control characters (the loader's str.isprintable(), for the ones an editor can show).
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
_STRING: Schema = {"type": "string"}
_NON_EMPTY: Schema = {"type": "string", "minLength": 1}
_STRINGS: Schema = {"type": "array", "items": _STRING}
_CAPABILITIES: Schema = {
    "type": "array",
    "items": {"enum": list(CAPABILITY_NAMES)},
    "uniqueItems": True,
    "description": "What the route's model can do; overrides litellm's model data.",
}


def _object(
    properties: Mapping[str, Schema],
    allowed: Collection[str],
    required: Collection[str] = (),
    description: str = "",
) -> Schema:
    """A mapping of exactly the fields the loader allows, each given a type here."""
    untyped = set(allowed) - set(properties)
    unknown = set(properties) - set(allowed)
    if untyped or unknown:
        raise AssertionError(
            f"schema and loader disagree: untyped {sorted(untyped)}, unknown {sorted(unknown)}"
        )
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = {name: properties[name] for name in allowed}
    if required:
        schema["required"] = list(required)
    schema["additionalProperties"] = False
    return schema


def _with_defaults(properties: Mapping[str, Schema], kind: type) -> dict[str, Schema]:
    """Each property with the dataclass's default, for the editor's hover and completion."""
    result: dict[str, Schema] = {}
    for field in dataclasses.fields(kind):
        if field.name not in properties:
            continue
        default = field.default
        schema = dict(properties[field.name])
        if isinstance(default, bool | int | float | str) and default != "":
            schema["default"] = default
        elif isinstance(default, tuple):
            schema["default"] = list(default)
        result[field.name] = schema
    return result


def _settings(kind: type, description: str, **overrides: Schema) -> Schema:
    """timeouts/failover/limits as the loader reads them: a count or a size is an
    integer >= 1, anything else (seconds, a rate) a positive number."""
    declared = {f.name: f.type for f in dataclasses.fields(kind)}
    properties = {
        name: overrides.get(name, _integer(1) if kind_ == "int" else _positive())
        for name, kind_ in declared.items()
    }
    return _object(_with_defaults(properties, kind), declared, description=description)


def _server() -> Schema:
    properties: dict[str, Schema] = {
        "host": _NON_EMPTY,
        "port": _integer(0, 65535),
        "client_keys": _STRINGS,
        "admin_keys": _STRINGS,
        "allow_unauthenticated": _BOOLEAN,
        "max_body_bytes": _integer(1),
        "max_body_bytes_total": _integer(1),
        "max_header_bytes": _integer(1024),
        "header_timeout": _number(0.001),
        "body_timeout": _number(0.001),
        "send_timeout": _number(0.001),
        "idle_timeout": _number(0.001),
        "max_connections": _integer(1),
        "drain_grace": _number(0),
        "drain_timeout": _number(0),
        "allowed_hosts": _STRINGS,
        "allowed_origins": _STRINGS,
    }
    return _object(
        _with_defaults(properties, ServerSettings),
        _SERVER_FIELDS,
        description="Where the router listens and who may call it.",
    )


def _budget() -> Schema:
    schema = _object(
        {name: _positive() for name in _BUDGET_FIELDS},
        _BUDGET_FIELDS,
        description="Spending cap in US dollars; give usd_per_day, usd_per_month or both.",
    )
    schema["minProperties"] = 1
    return schema


def _any_case(name: str) -> str:
    """`name` as a pattern that ignores case (JSON Schema's regexes have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)


def _headers() -> Schema:
    refused = "|".join(_any_case(name) for name in sorted(REFUSED))
    return {
        "type": "object",
        "description": "Sent on every request of this key (HTTP-Referer, OpenAI-Organization, "
        "...); ${VAR} allowed. Not credential, hop-by-hop or framing headers.",
        "propertyNames": {
            "pattern": HEADER_NAME,
            "not": {"pattern": f"^(?:{refused}|{_any_case('x-router-')}.*)$"},
        },
        "additionalProperties": _STRING,
    }


def _key() -> Schema:
    providers = sorted(DEFAULT_API_BASES)
    properties: dict[str, Schema] = {
        "provider": {
            "description": f"{', '.join(providers)}, or any provider litellm knows",
            "anyOf": [{"enum": providers}, _NON_EMPTY],
        },
        "api_base": {"type": "string", "pattern": r"^(https?://|\$\{)"},
        "api_key": {"type": "string", "description": "Prefer ${VAR}: the file holds no secret."},
        "api_version": {"type": "string", "description": "provider azure only"},
        "budget": _budget(),
        "stream_usage": _BOOLEAN,
        "proxy": {"type": "string", "description": "an http:// proxy URL, or none"},
        "headers": _headers(),
    }
    return _object(properties, _KEY_FIELDS, required=("provider", "api_key"))


def _timeouts(allowed: tuple[str, ...], description: str) -> Schema:
    """A model's or a route's own timeouts: any subset, no defaults (the outer ones are)."""
    return _object({name: _positive() for name in allowed}, allowed, description=description)


def _route() -> Schema:
    properties: dict[str, Schema] = {
        "key": {"type": "string", "description": "a name under keys:"},
        "model": {
            "type": "string",
            "minLength": 1,
            "pattern": _PRINTABLE,
            "description": "the provider's model",
        },
        "priority": _integer(1),
        "weight": _positive(),
        "price": _object(
            {name: _number(0) for name in (*_PRICE_FIELDS, *_CACHE_PRICE_FIELDS)},
            (*_PRICE_FIELDS, *_CACHE_PRICE_FIELDS),
            required=_PRICE_FIELDS,
            description="US dollars per million tokens; cache prices default to the input's.",
        ),
        "max_input_tokens": _integer(1),
        "capabilities": _CAPABILITIES,
        "timeouts": _timeouts(
            ROUTE_TIMEOUT_FIELDS,
            "Seconds, for attempts on this route: over its model's and the top-level ones.",
        ),
    }
    return _object(properties, _ROUTE_FIELDS, required=("key", "model"))


def _model() -> Schema:
    model_list: Schema = {"type": "array", "items": _STRING, "uniqueItems": True}
    properties: dict[str, Schema] = {
        "routes": {"type": "array", "items": _route()},
        "fallback": {"anyOf": [{"const": CHEAPER}, model_list]},
        "context_fallback": model_list,
        "budget": _budget(),
        "max_wait": _number(0),  # seconds; 0: answer 429 at once
        "affinity": _BOOLEAN,
        "capabilities": _CAPABILITIES,
        "timeouts": _timeouts(
            TIMEOUT_FIELDS,
            "Seconds, for requests to this model: over the top-level ones; a route's own win.",
        ),
    }
    schema = _object(properties, _MODEL_FIELDS)
    schema["anyOf"] = [{"required": ["routes"]}, {"required": ["fallback"]}]
    return schema


def _state() -> Schema:
    properties: dict[str, Schema] = {
        "backend": {"enum": list(_STATE_BACKENDS)},
        "url": {"type": "string", "pattern": r"^(redis|rediss|unix)://|^\$\{"},
        "prefix": _NON_EMPTY,
        "snapshot": _NON_EMPTY,
    }
    schema = _object(
        _with_defaults(properties, StateSettings),
        _STATE_FIELDS,
        description="Where health and spend state is kept: memory (one process) or redis.",
    )
    schema["if"] = {"properties": {"backend": {"const": "redis"}}, "required": ["backend"]}
    schema["then"] = {"required": ["url"], "not": {"required": ["snapshot"]}}
    schema["else"] = {"not": {"anyOf": [{"required": ["url"]}, {"required": ["prefix"]}]}}
    return schema


def _telemetry() -> Schema:
    traces: dict[str, Schema] = {
        "endpoint": {
            "type": "string",
            "pattern": r"^(https?://|\$\{)",
            "description": "an OTLP/HTTP collector, as OTEL_EXPORTER_OTLP_ENDPOINT",
        },
        "sample_rate": _typed({"type": "number", "minimum": 0, "maximum": 1}),
    }
    return _object(
        {"traces": _object(traces, _TRACES_FIELDS, description="OpenTelemetry traces.")},
        _TELEMETRY_FIELDS,
        description="Traces over OTLP/HTTP (the otel extra); unset fields: the OTEL_* variables.",
    )


def build_schema() -> Schema:
    named = r"^[^/\s\x00-\x1f\x7f]+$"
    properties: dict[str, Schema] = {
        "server": _server(),
        "keys": {
            "type": "object",
            "description": "Provider credentials, by a name routes refer to.",
            "propertyNames": {"pattern": named},
            "additionalProperties": _key(),
        },
        "models": {
            "type": "object",
            "description": "Client-facing model names and the routes that serve them.",
            "minProperties": 1,
            "additionalProperties": _model(),
        },
        "timeouts": _settings(Timeouts, "Per upstream attempt, in seconds."),
        "failover": _settings(
            FailoverSettings,
            "Retries, cooldowns and circuit breakers.",
            breaker_failure_rate=_typed({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
        ),
        "limits": _settings(Limits, "Bounds on what an upstream may send."),
        "state": _state(),
        "telemetry": _telemetry(),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llm-router routes.yaml",
        **_object(properties, _TOP_FIELDS, required=("keys", "models")),
    }


def render_schema() -> str:
    return json.dumps(build_schema(), indent=2) + "\n"


def shipped_schema() -> str:
    """The committed copy, as installed with the package."""
    return resources.files("router.config").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


if __name__ == "__main__":
    sys.stdout.write(render_schema())
