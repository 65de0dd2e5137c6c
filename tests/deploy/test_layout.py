"""The package's layers import one way only (README "Development").

An import graph cannot see a callback passed down at run time, but it does keep the
layers honest: a pure rule that starts reading health state, or the simulator reaching
into the router it is meant to test independently, fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest

from tests.conftest import REPO

# Each part of router/ and the parts it may import (types, outcomes and errors sit at the
# bottom).
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "outcomes": set(),
    "errors": {"types", "outcomes"},
    "files": set(),  # reading a file the operator names, within limits: the stdlib only
    "daemon_thread": set(),  # work that may hang, on a thread no exit waits for: stdlib only
    "rules": {"types", "outcomes", "errors"},
    "wire": {"types", "outcomes", "errors", "rules"},
    "telemetry": {"types", "outcomes", "rules", "wire"},
    "upstream": {"types", "outcomes", "errors", "rules", "wire"},
    "health": {"types", "outcomes", "errors", "files", "daemon_thread", "rules", "telemetry"},
    "config": {"types", "outcomes", "errors", "files", "upstream"},
    "failover": {"types", "outcomes", "errors", "rules", "wire", "telemetry", "upstream", "health"},
    "handlers": {
        *("types", "outcomes", "errors", "rules", "wire", "telemetry", "upstream", "health"),
        *("config", "failover"),
    },
    "fast_paths": set(),  # a request for a fixed path to its handler: aiohttp only
    "refused_heads": {"errors", "wire"},  # the answers to heads refused before a handler
    "send_deadline": set(),  # a client that stops reading is reset: aiohttp only
    "client_connection": {"errors", "refused_heads", "send_deadline"},  # a connection's limits
    "front_door": {"client_connection", "fast_paths"},  # the connection cap, the drain's
    # The serve loop's parts: a new config swapped in (reload), shutdown (drain).
    "reload": {
        *("types", "outcomes", "errors", "wire", "telemetry", "upstream", "health"),
        *("config", "failover", "handlers", "daemon_thread"),
    },
    "drain": {"front_door", "handlers"},
    "probe": {"types", "files"},  # the container's health check: pyyaml and stdlib only
    "sim": set(),  # the simulator shares nothing with the code it tests
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(part: str) -> Iterator[tuple[str, str]]:
    """(file, imported part) for every `router.*` import in `router/<part>`, function-level
    imports included."""
    base = REPO / "router"
    files = [base / f"{part}.py"] if (base / f"{part}.py").exists() else []
    files += sorted((base / part).rglob("*.py")) if (base / part).is_dir() else []
    assert files, f"router/{part} is gone: update ALLOWED"
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "router":
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("router."):
                names = [_part(node.module or "")]
            elif isinstance(node, ast.Import):
                names = [_part(a.name) for a in node.names if a.name.startswith("router.")]
            else:
                continue
            for name in names:
                yield path.relative_to(REPO).as_posix(), name


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_the_layers_below_it(part: str) -> None:
    wrong = sorted(
        f"{file} imports router.{name}"
        for file, name in _imports(part)
        if name != part and name not in ALLOWED[part]
    )
    assert wrong == []


def test_every_part_of_the_package_has_a_place_in_the_table() -> None:
    entry_points = {"__init__", "__main__", "cli", "demo", "server"}
    parts = {
        path.stem if path.is_file() else path.name
        for path in (REPO / "router").iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
    }
    assert parts - entry_points == set(ALLOWED)
