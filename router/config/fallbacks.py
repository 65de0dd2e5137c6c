"""routes.yaml models' `fallback:` and `context_fallback:`: the lists checked against the
models there are, `fallback: cheaper` resolved by price, no cycles, and each model's
chain (itself, then every model its fallbacks reach).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from router.config.fields import Field, suggestion
from router.types import Price

CHEAPER = "cheaper"


def parse_fallbacks(
    entries: list[tuple[str, Field]],
    found_of: Mapping[str, Mapping[str, Field]],
    prices: Mapping[str, Price | None],
) -> dict[str, tuple[str, ...]]:
    """Each model's `fallback:` (a list of models, or `cheaper`), checked for cycles; a
    model with neither routes nor a fallback is refused."""
    names = found_of.keys()
    fallbacks: dict[str, tuple[str, ...]] = {}
    fallback_at: dict[str, Field] = {}
    for name, entry in entries:
        found = found_of[name]
        if "fallback" in found:
            fallback_at[name] = found["fallback"]
            fallbacks[name] = _fallback(found["fallback"], name, names, prices)
        else:
            fallbacks[name] = ()
        written = found["routes"].items() if "routes" in found else []
        if not written and not fallbacks[name]:
            raise entry.error("needs at least one route or a fallback")
    _reject_cycles(fallbacks, fallback_at)
    return fallbacks


def context_fallbacks(found_of: Mapping[str, Mapping[str, Field]]) -> dict[str, tuple[str, ...]]:
    """Each model's `context_fallback:` (models with larger windows), checked for cycles."""
    names = found_of.keys()
    context = {
        name: _model_list(found["context_fallback"], name, names)
        if "context_fallback" in found
        else ()
        for name, found in found_of.items()
    }
    _reject_cycles(context, {n: found_of[n]["context_fallback"] for n in names if context[n]})
    return context


def _fallback(
    at: Field, name: str, models: Collection[str], prices: Mapping[str, Price | None]
) -> tuple[str, ...]:
    if at.is_scalar and at.string() == CHEAPER:
        return _cheaper(at, name, prices)
    return _model_list(at, name, models)  # anything else must be a list


def _cheaper(at: Field, name: str, prices: Mapping[str, Price | None]) -> tuple[str, ...]:
    """The models that cost less than `name`, most expensive first, cheapest last."""
    own = prices[name]
    if own is None:
        raise at.error(
            f"'{CHEAPER}' needs a price for {name}: litellm's model data has none for its "
            "routes, so set price: {input_per_mtok, output_per_mtok} on them"
        )
    cheaper = [
        (price.blended, other)
        for other, price in prices.items()
        if other != name and price is not None and price.blended < own.blended
    ]
    return tuple(other for _, other in sorted(cheaper, reverse=True))


def _model_list(at: Field, name: str, models: Collection[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for entry in at.items():
        target = entry.string()
        if target not in models:
            raise entry.error(f"unknown model '{target}'{suggestion(target, models)}")
        if target in chosen:
            raise entry.error(f"'{target}' is listed twice")
        chosen.append(target)  # a model naming itself is reported as a cycle
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
        for target in fallbacks.get(name, ()):
            visit(target, path)
        path.pop()
        done.add(name)

    for name in fallbacks:
        visit(name, [])


def chain(name: str, fallbacks: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """`name`, then every model reachable through fallback: depth-first, in list order, once."""
    chain: list[str] = []
    pending = [name]
    while pending:
        model = pending.pop()
        if model not in chain:
            chain.append(model)
            pending.extend(reversed(fallbacks[model]))
    return tuple(chain)
