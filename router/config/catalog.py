"""Prices and context windows per route, without importing litellm.

Two tables, both litellm's model data: `model_data.json`, shipped in this package and
made by `model_data_gen.py` from a litellm version it records, and, when litellm (the
`translate` extra) is installed, the one inside its package, read as a file (about 20 ms;
importing litellm takes seconds and may reach for the network; litellm-notes.md). The
newer table wins model by model and the other fills its gaps: an installed litellm at
least as new as the shipped file's source knows newer prices and more providers, an
older one (a pin elsewhere in the environment) must not take newer prices back. Both
are read once, at config load, and dropped after (`forget()`).

A route's own `price`, `max_input_tokens` and `capabilities` in routes.yaml override
the table.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from router.types import Capability, Price

_LITELLM_FILE = "model_prices_and_context_window_backup.json"
SHIPPED = Path(__file__).with_name("model_data.json")


@dataclass(frozen=True, slots=True)
class ModelFacts:
    price: Price | None = None
    max_input_tokens: int | None = None
    # A Capability mask; None when the entry says nothing of tools, vision or schemas.
    capabilities: int | None = None
    retires: str | None = None  # the provider's announced retirement date, YYYY-MM-DD


UNKNOWN = ModelFacts()
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@cache
def _table() -> Mapping[str, Any]:
    shipped, source = _shipped()
    installed = _installed()
    if installed is None:
        return shipped
    table, version = installed
    if version is None or source is None or version >= source:
        return {**shipped, **table}
    return {**table, **shipped}


def _shipped() -> tuple[dict[str, Any], tuple[int, ...] | None]:
    data = _read(SHIPPED)
    models, source = data.get("models"), data.get("source")
    version = _version(source.get("litellm")) if isinstance(source, dict) else None
    return (models if isinstance(models, dict) else {}), version


def _installed() -> tuple[dict[str, Any], tuple[int, ...] | None] | None:
    """The installed litellm's table and version, or None without litellm."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):  # a broken install, or an import hook that refuses it
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    table = _read(Path(next(iter(spec.submodule_search_locations))) / _LITELLM_FILE)
    if not table:
        return None
    try:
        version = _version(importlib.metadata.version("litellm"))
    except importlib.metadata.PackageNotFoundError:
        version = None
    return table, version


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _version(text: object) -> tuple[int, ...] | None:
    """(1, 110, 2) for "1.110.2"; None for what does not start with numbers."""
    match = re.match(r"\d+(?:\.\d+)*", text) if isinstance(text, str) else None
    return tuple(int(part) for part in match.group().split(".")) if match else None


def facts(provider: str, model: str) -> ModelFacts:
    """What the model data knows of `model` at `provider` (UNKNOWN when nothing)."""
    table = _table()
    for name in (f"{provider}/{model}", model):
        entry = table.get(name)
        if isinstance(entry, dict):
            return _facts_of(entry)
    return UNKNOWN


def forget() -> None:
    """Drop the tables once the config is loaded: up to 8 MB nobody reads afterwards."""
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
    retires = entry.get("deprecation_date")
    return ModelFacts(
        price=price,
        max_input_tokens=window if isinstance(window, int) else None,
        capabilities=_capabilities(entry),
        retires=retires if _is_date(retires) else None,
    )


def _is_date(value: object) -> bool:
    """A real YYYY-MM-DD date (not 2026-02-30): the retirement gauge converts it."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


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
