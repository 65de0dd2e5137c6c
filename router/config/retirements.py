"""Upstream models their provider has announced a retirement date for.

litellm's model data carries the date (`deprecation_date`; config/catalog.py reads it).
After it the provider answers 404 for the model, and a route on it is skipped: a client
model whose routes are all on it gets 503s. The config warns of each such model at load
(`check` prints it, `serve` and a reload log it), and the date stays on the route for the
`llm_router_route_retirement_timestamp_seconds` gauge, which an alert reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.types import DEFAULT_API_BASES, Key, ModelSpec


def reaches_provider(key: Key) -> bool:
    """Whether `key` reaches its provider itself (its default api_base, or none given):
    a model of the same name behind another api_base (a compatible API, a simulator) is
    someone else's, and an Azure deployment's name is the user's own."""
    default = DEFAULT_API_BASES.get(key.provider)
    return not key.api_base or (default is not None and key.api_base.rstrip("/") == default)


def retirement_warnings(models: Mapping[str, ModelSpec]) -> list[str]:
    """One warning per dated upstream model, naming the routes that use it."""
    users: dict[tuple[str, str, str], dict[str, None]] = {}  # route ids, in order, once
    for spec in models.values():
        for route in spec.routes:
            if route.retires is not None:
                at = (route.key.provider, route.model, route.retires)
                users.setdefault(at, {})[route.id] = None
    warnings = []
    for (provider, model, date), route_ids in sorted(users.items()):
        routes = ", ".join(route_ids)
        skipped = f"routes {routes} are" if len(route_ids) > 1 else f"route {routes} is"
        warnings.append(
            f"{provider} retires {model} on {date} (litellm's model data): from then on it "
            f"answers 404 and {skipped} skipped; move the routes to a current model"
        )
    return warnings
