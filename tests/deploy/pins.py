"""Reading a pip constraints file of exact pins (deploy/constraints.txt, .ci/oldest.txt)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name


def pins_in(path: Path) -> dict[str, str]:
    """Each pinned distribution's canonical name and version, in the file's order."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, line
        name = canonicalize_name(match[1])
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match[2]
    return pins
