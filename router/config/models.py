"""routes.yaml `models:`: routes, prices and budgets (fallbacks: fallbacks.py).

Everything that can be is resolved here, once: each route's price, context window and
capabilities (routes.yaml first, litellm's model data second), and each model's
fallbacks, chain and the capabilities worth checking a request for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from statistics import fmean
from types import MappingProxyType
from typing import Any

from router.config import catalog
from router.config.fallbacks import chain, context_fallbacks, parse_fallbacks
from router.config.fields import Field, suggestion
from router.config.retirements import reaches_provider
from router.types import (
    ALL_CAPABILITIES,
    CAPABILITY_NAMES,
    Budget,
    Key,
    ModelSpec,
    Operation,
    Price,
    Route,
    SkippedKey,
    Timeouts,
)
from router.upstream.translate import can_serve

_MODEL_FIELDS = (
    "routes",
    "fallback",
    "context_fallback",
    "budget",
    "max_wait",
    "affinity",
    "capabilities",
    "timeouts",
)
_ROUTE_FIELDS = (
    "key", "model", "priority", "weight", "price", "max_input_tokens", "capabilities", "timeouts"
)  # fmt: skip
TIMEOUT_FIELDS = tuple(f.name for f in dataclasses.fields(Timeouts))
# A route's attempts have their own connect, first_byte, idle and stream; `request` bounds the
# whole client request, every route of it, so it belongs to the model or the top level.
ROUTE_TIMEOUT_FIELDS = tuple(name for name in TIMEOUT_FIELDS if name != "request")
_PRICE_FIELDS = ("input_per_mtok", "output_per_mtok")
_CACHE_PRICE_FIELDS = ("cached_input_per_mtok", "cache_write_per_mtok")  # optional
_BUDGET_FIELDS = ("usd_per_day", "usd_per_month")


def parse_models(
    at: Field,
    keys: Mapping[str, Key],
    skipped: Mapping[str, SkippedKey],
    warnings: list[str],
    timeouts: Timeouts,
) -> dict[str, ModelSpec]:
    """`timeouts`: the top-level ones, which a model's and a route's own override."""
    entries = at.named()
    if not entries:
        raise at.error("no models are defined")
    names = {name for name, _ in entries}
    found_of = {name: entry.fields(_MODEL_FIELDS) for name, entry in entries}
    own_timeouts = {
        name: _timeouts(found_of[name]["timeouts"], TIMEOUT_FIELDS)
        if "timeouts" in found_of[name]
        else {}
        for name, _ in entries
    }
    routes = {
        name: _model_routes(found_of[name], keys, skipped, timeouts, own_timeouts[name])
        for name in names
    }
    prices = {name: model_price(routes[name]) for name in names}
    fallbacks = parse_fallbacks(entries, found_of, prices)
    context = context_fallbacks(found_of)
    chains = {name: chain(name, fallbacks) for name in names}
    routes_for = {name: _routes_per_operation(routes[name]) for name in names}
    specs = {
        name: ModelSpec(
            name=name,
            routes=routes[name],
            fallback=fallbacks[name],
            chain=chains[name],
            context_fallback=context[name],
            price=prices[name],
            timeouts=merged_timeouts(timeouts, own_timeouts[name]),
            routes_for=routes_for[name],
            checked_needs=_checked_needs(name, chains, context, routes_for),
            **_own_settings(found_of[name]),
        )
        for name, _ in entries
    }
    for name, _ in entries:
        if note := _unserved_warning(specs[name], specs, "routes" in found_of[name]):
            warnings.append(note)
    return specs


def _model_routes(
    found: Mapping[str, Field],
    keys: Mapping[str, Key],
    skipped: Mapping[str, SkippedKey],
    timeouts: Timeouts,
    own_timeouts: Mapping[str, float],
) -> tuple[Route, ...]:
    """A model's `routes:`, with its `capabilities:` and timeouts applied to each."""
    model_capabilities = capabilities(found["capabilities"]) if "capabilities" in found else None
    return _routes(found.get("routes"), keys, skipped, model_capabilities, timeouts, own_timeouts)


def _own_settings(found: Mapping[str, Field]) -> dict[str, Any]:
    """A model's settings that stand alone: `budget`, `max_wait`, `affinity`."""
    return {
        "budget": parse_budget(found["budget"]) if "budget" in found else None,
        "max_wait": found["max_wait"].number(minimum=0) if "max_wait" in found else None,
        "affinity": found["affinity"].boolean() if "affinity" in found else True,
    }


def model_price(routes: tuple[Route, ...]) -> Price | None:
    """The mean price of the best-priority routes that have one."""
    priced = [r for r in routes if r.price is not None]
    if not priced:
        return None
    best = min(r.priority for r in priced)
    chosen = [r.price for r in priced if r.priority == best and r.price is not None]
    return Price(input=fmean(p.input for p in chosen), output=fmean(p.output for p in chosen))


def parse_budget(at: Field) -> Budget:
    found = at.fields(_BUDGET_FIELDS)
    if not found:
        raise at.error("give usd_per_day, usd_per_month or both")
    return Budget(
        usd_per_day=found["usd_per_day"].positive_number() if "usd_per_day" in found else None,
        usd_per_month=(
            found["usd_per_month"].positive_number() if "usd_per_month" in found else None
        ),
    )


def capabilities(at: Field) -> int:
    """A `capabilities:` list as a Capability mask."""
    mask = 0
    for entry in at.items():
        name = entry.string()
        capability = CAPABILITY_NAMES.get(name)
        if capability is None:
            raise entry.error(
                f"unknown capability '{name}'{suggestion(name, CAPABILITY_NAMES)}; "
                f"known: {', '.join(CAPABILITY_NAMES)}"
            )
        mask |= capability
    return mask


def merged_timeouts(base: Timeouts, overrides: Mapping[str, float]) -> Timeouts | None:
    """`base` with `overrides` in; None when nothing is overridden (the base applies)."""
    return dataclasses.replace(base, **overrides) if overrides else None


def _timeouts(at: Field, allowed: tuple[str, ...]) -> dict[str, float]:
    """A model's or a route's `timeouts:`, any subset of `allowed`, each positive seconds."""
    if "request" not in allowed:
        given = at.fields(TIMEOUT_FIELDS)
        if "request" in given:
            raise given["request"].error(
                "bounds the whole client request, every route and fallback of it: set it "
                "on the model or in the top-level timeouts, not on one route"
            )
    return {name: field.positive_number() for name, field in at.fields(allowed).items()}


def _routes(
    at: Field | None,
    keys: Mapping[str, Key],
    skipped: Mapping[str, SkippedKey],
    model_capabilities: int | None,
    timeouts: Timeouts,
    model_timeouts: Mapping[str, float],
) -> tuple[Route, ...]:
    """The model's routes in file order (the policy applies priority), less skipped keys.
    `model_capabilities`: the model's `capabilities:`, for routes without their own.
    Each route's timeouts are resolved here: its own over its model's over `timeouts`."""
    usable: list[Route] = []
    first: dict[str, str] = {}
    for entry in at.items() if at is not None else []:
        found = entry.fields(_ROUTE_FIELDS, required=("key", "model"))
        key_name = found["key"].string()
        if key_name not in keys and key_name not in skipped:
            hint = suggestion(key_name, [*keys, *skipped])
            raise found["key"].error(f"unknown key '{key_name}'{hint}")
        model = found["model"].string()
        if not model:
            raise found["model"].error("must not be empty")
        if not model.isprintable():
            # The route id is sent in the x-router-route header, where none may stand.
            raise found["model"].error("must not hold control characters")
        # Health state is kept per route id, so two routes with one id would share it.
        route_id = f"{key_name}/{model}"
        if route_id in first:
            raise entry.error(f"route {route_id} is already listed at {first[route_id]}")
        first[route_id] = entry.path
        priority = found["priority"].integer(minimum=1) if "priority" in found else 1
        weight = found["weight"].positive_number() if "weight" in found else 1.0
        price = _price(found["price"]) if "price" in found else None
        window = (
            found["max_input_tokens"].integer(minimum=1) if "max_input_tokens" in found else None
        )
        written = (
            capabilities(found["capabilities"]) if "capabilities" in found else model_capabilities
        )
        own = _timeouts(found["timeouts"], ROUTE_TIMEOUT_FIELDS) if "timeouts" in found else {}
        key = keys.get(key_name)
        if key is None:
            continue
        facts = catalog.facts(key.provider, model)
        if written is None:
            written = ALL_CAPABILITIES if facts.capabilities is None else facts.capabilities
        usable.append(
            Route(
                key=key,
                model=model,
                priority=priority,
                weight=weight,
                price=price or facts.price,
                max_input_tokens=window or facts.max_input_tokens,
                capabilities=written,
                timeouts=merged_timeouts(timeouts, {**model_timeouts, **own}),
                retires=facts.retires if reaches_provider(key) else None,
            )
        )
    return tuple(usable)


def _price(at: Field) -> Price:
    found = at.fields((*_PRICE_FIELDS, *_CACHE_PRICE_FIELDS), required=_PRICE_FIELDS)
    per_million = [found[name].number(minimum=0) for name in _PRICE_FIELDS]
    cached, write = (
        found[name].number(minimum=0) / 1e6 if name in found else None
        for name in _CACHE_PRICE_FIELDS
    )
    # Without a cache price, cache reads and writes are charged as fresh input.
    return Price(per_million[0] / 1e6, per_million[1] / 1e6, cached, write)


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


def _checked_needs(
    name: str,
    chains: Mapping[str, tuple[str, ...]],
    context: Mapping[str, tuple[str, ...]],
    routes_for: Mapping[str, Mapping[Operation, tuple[Route, ...]]],
) -> Mapping[Operation, int]:
    """Per operation, the capabilities some route a request for `name` may reach lacks
    (its chain, and the context fallbacks of any model on the way): only those are
    worth looking for in a request. 0 when every such route has every one."""
    reached: list[str] = []
    pending = [name]
    while pending:
        for model in chains[pending.pop()]:
            if model not in reached:
                reached.append(model)
                pending.extend(context[model])
    checked: dict[Operation, int] = {}
    for operation in Operation:
        common = ALL_CAPABILITIES
        for model in reached:
            for route in routes_for[model][operation]:
                common &= route.capabilities
        checked[operation] = ALL_CAPABILITIES & ~common
    return MappingProxyType(checked)


def _routes_per_operation(routes: tuple[Route, ...]) -> Mapping[Operation, tuple[Route, ...]]:
    """Per operation, the routes whose provider serves it, natively or through litellm."""
    return MappingProxyType(
        {
            operation: tuple(r for r in routes if can_serve(r.key.provider, operation))
            for operation in Operation
        }
    )
