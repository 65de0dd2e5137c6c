"""Prices and context windows per route, from litellm's model data, without litellm.

litellm ships its price and context-window table as a JSON file inside the package
(litellm-notes.md). Reading that file takes about 20 ms; importing litellm takes
seconds and may reach for the network. So the file is read once, at config load,
located with `find_spec` (which does not import the package).

A route's own `price`, `max_input_tokens` and `capabilities` in routes.yaml override
the table.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from router.types import Capability, Price

_DATA_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class ModelFacts:
    price: Price | None = None
    max_input_tokens: int | None = None
    # A Capability mask; None when the entry says nothing of tools, vision or schemas.
    capabilities: int | None = None


UNKNOWN = ModelFacts()


@cache
def _table() -> Mapping[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = os.path.join(spec.submodule_search_locations[0], _DATA_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def facts(provider: str, model: str) -> ModelFacts:
    """What litellm's table knows of `model` at `provider` (UNKNOWN when nothing)."""
    table = _table()
    for name in (f"{provider}/{model}", model):
        entry = table.get(name)
        if isinstance(entry, dict):
            return _facts_of(entry)
    return UNKNOWN


def forget() -> None:
    """Drop the table once the config is loaded: about 8 MB nobody reads afterwards."""
    _table.cache_clear()


def _facts_of(entry: Mapping[str, Any]) -> ModelFacts:
    price = None
    cost_in, cost_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if isinstance(cost_in, int | float) and isinstance(cost_out, int | float):
        read, write = (
            entry.get("cache_read_input_token_cost"),
            entry.get("cache_creation_input_token_cost"),
        )
        price = Price(
            input=float(cost_in),
            output=float(cost_out),
            cached_input=float(read) if isinstance(read, int | float) else None,
            cache_write=float(write) if isinstance(write, int | float) else None,
        )
    window = entry.get("max_input_tokens")
    return ModelFacts(
        price=price,
        max_input_tokens=window if isinstance(window, int) else None,
        capabilities=_capabilities(entry),
    )


# litellm's flags; a flag absent from an entry that has some of them means unsupported,
# as litellm's own supports_*() read it.
_FLAGS = {
    "supports_function_calling": Capability.TOOLS,
    "supports_vision": Capability.IMAGES,
    "supports_response_schema": Capability.JSON_SCHEMA,
}


def _capabilities(entry: Mapping[str, Any]) -> int | None:
    """The entry's capability mask, or None when it names none of the flags (unknown).
    The table has no flag for JSON mode: every model it describes is taken to have it."""
    if not any(flag in entry for flag in _FLAGS):
        return None
    mask = int(Capability.JSON_OBJECT)
    for flag, capability in _FLAGS.items():
        if entry.get(flag) is True:
            mask |= capability
    return mask
