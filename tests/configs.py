"""routes.yaml documents for tests, built as data and written by `yaml.safe_dump`.

A test that needs a variant builds it from these pieces instead of editing YAML text:
`str.replace` on a substring that is not there changes nothing and says nothing, so the
test would quietly run against the config it meant to change. Tests about the YAML text
itself (file:line errors, the README's examples) keep their YAML as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import yaml

from tests.conftest import SIM_A, SIM_B, SIM_C

KeyEntry = tuple[str, dict[str, Any]]


class Credential(Protocol):
    """What a key entry needs from a simulated key: its name and its secret."""

    name: str
    api_key: str


def routes_yaml(
    *, keys: Iterable[KeyEntry], models: dict[str, dict[str, Any]], **sections: Any
) -> str:
    """The document: `keys` from `key()`/`sim_key()`, `models` by name from `model()`, and
    any other top-level section (server, timeouts, failover) as a mapping."""
    named: dict[str, dict[str, Any]] = {}
    for name, fields in keys:
        if name in named:
            raise ValueError(f"key {name!r} is given twice")
        named[name] = fields
    document = {"keys": named, "models": models, **sections}
    return yaml.safe_dump(document, sort_keys=False)


def key(
    name: str,
    api_base: str | None = None,
    *,
    api_key: str,
    provider: str = "openai",
    **extra: Any,
) -> KeyEntry:
    """One entry of `keys:`; api_base None leaves the provider's default."""
    fields: dict[str, Any] = {"provider": provider}
    if api_base is not None:
        fields["api_base"] = api_base
    return name, {**fields, "api_key": api_key, **extra}


def sim_key(sim: Credential, api_base: str, *, provider: str = "openai", **extra: Any) -> KeyEntry:
    """A key entry holding a simulated key's own name and secret."""
    return key(sim.name, api_base, api_key=sim.api_key, provider=provider, **extra)


def sim_keys(api_base: str, *sims: Credential, provider: str = "openai") -> list[KeyEntry]:
    """Key entries for simulated keys of one provider at one api_base, in the order given."""
    return [sim_key(sim, api_base, provider=provider) for sim in sims]


def route(
    key: str, model: str, *, priority: int | None = None, weight: float | None = None, **extra: Any
) -> dict[str, Any]:
    """One entry of a model's `routes:`; priority and weight are written only when given."""
    fields: dict[str, Any] = {"key": key, "model": model}
    if priority is not None:
        fields["priority"] = priority
    if weight is not None:
        fields["weight"] = weight
    return {**fields, **extra}


def model(*routes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One entry of `models:`: its routes in order, then fallback, budget and the like."""
    return {"routes": list(routes), **fields}


# -- the three-key config most router tests share --------------------------------------


def two_keys_models(
    *, priority_b: int | None = None, fallback: list[str] | None = None, affinity: bool = True
) -> dict[str, dict[str, Any]]:
    """gpt-4o on keys a and b, optionally falling back to gpt-4o-mini, which is on key c.
    `affinity=False` for tests that count on the seeded random choice between a and b."""
    extra: dict[str, Any] = {} if fallback is None else {"fallback": fallback}
    if not affinity:
        extra["affinity"] = False
    return {
        "gpt-4o": model(route("a", "gpt-4o"), route("b", "gpt-4o", priority=priority_b), **extra),
        "gpt-4o-mini": model(route("c", "gpt-4o-mini")),
    }


def two_keys_config(
    sim_url: str,
    *,
    priority_b: int | None = None,
    fallback: list[str] | None = None,
    affinity: bool = True,
    **sections: Any,
) -> str:
    """gpt-4o on keys a and b (same priority unless priority_b), gpt-4o-mini on key c, all
    three served by the simulator at `sim_url`."""
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B, SIM_C),
        models=two_keys_models(priority_b=priority_b, fallback=fallback, affinity=affinity),
        **sections,
    )


def preferring_a(sim_url: str, **kwargs: Any) -> str:
    """`two_keys_config` with b at priority 2, so a is always the first choice."""
    return two_keys_config(sim_url, priority_b=2, **kwargs)


def state_scope(text: str, kind: str, name: str) -> str:
    """Where the config `text` keeps the state of key or route `name` ("a", "a/gpt-4o"):
    under its key's account (router/health/tracker.py), as a snapshot or Redis holds it."""
    from router.config import parse_config
    from router.health.scopes import account_scope, route_scope

    config = parse_config(text, source="routes.yaml", environ={})
    if kind == "key":
        return account_scope(config.keys[name])
    return route_scope(next(route for route in config.all_routes() if route.id == name))
