"""Per model, operation and need, the routes that can serve a request: fixed per config.

A request that needs tools, images or a JSON output format (`Call.needs`, a Capability
mask) goes only to routes that have all of it (`Route.capabilities`, resolved at load).
The filtered tuple is worked out the first time a (model, operation, needs) is asked
for and kept: a dict lookup per model of the chain afterwards, whatever the number of
routes. The cache is bounded by models x operations x 16 masks.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.errors import InvalidRequest
from router.types import CAPABILITY_WORDS, ModelSpec, Operation, Route


class CapableRoutes:
    __slots__ = ("_models", "_routes")

    def __init__(self, models: Mapping[str, ModelSpec]) -> None:
        self._models = models
        self._routes: dict[tuple[str, Operation, int], tuple[Route, ...]] = {}

    def of(self, model: ModelSpec, operation: Operation, needs: int) -> tuple[Route, ...]:
        """`model`'s routes for `operation` that have every capability in `needs`."""
        if not needs:
            return model.routes_for[operation]
        key = (model.name, operation, needs)
        routes = self._routes.get(key)
        if routes is None:
            routes = tuple(
                r for r in model.routes_for[operation] if r.capabilities & needs == needs
            )
            self._routes[key] = routes
        return routes

    def refusal(self, model: ModelSpec, operation: Operation, needs: int) -> InvalidRequest | None:
        """The 400 for a request no route of `model`'s chain can serve for what it needs
        (None when some route can): it names the capability no route has."""
        if not needs:
            return None
        chain = [self._models[name] for name in model.chain]
        if any(self.of(spec, operation, needs) for spec in chain):
            return None
        has = 0
        for spec in chain:
            for route in spec.routes_for[operation]:
                has |= route.capabilities
        missing = needs & ~has
        words = _words(missing or needs)
        joined = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
        what = joined if missing else f"{joined} together"
        return InvalidRequest(
            f"no route of {' -> '.join(model.chain)} supports {what}",
            "unsupported_capability",
        )


def _words(mask: int) -> list[str]:
    return [word for capability, word in CAPABILITY_WORDS.items() if mask & capability]


__all__ = ["CapableRoutes"]
