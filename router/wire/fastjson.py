"""JSON on the per-request path: orjson where it gives the same answer, the stdlib otherwise.

Every request body is parsed and every request ends with a JSON log line; orjson does
each about five times faster than `json` (bench/cpu.py). It is stricter than the stdlib,
so anything it refuses (NaN, a lone surrogate escape, a byte order mark, an integer
over 64 bits when writing) falls back to `json`, and callers see exactly what `json`
would have accepted or raised. It reads integers over 64 bits as floats, so code that
re-serialises a client's body must parse it with `exact_loads` instead.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_LOG_OPTIONS = orjson.OPT_NON_STR_KEYS
_stdlib_encode = json.JSONEncoder(default=repr).encode


def loads(data: bytes) -> Any:
    """Parse `data`; raises ValueError (or UnicodeDecodeError) as `json.loads` would."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # accepts what orjson does not, or raises json's own error


def exact_loads(data: bytes) -> Any:
    """`json.loads`: every value as written, big integers included."""
    return json.loads(data)


def log_text(event: dict[str, Any]) -> str:
    """A log event as one line of JSON; values JSON cannot hold are written as repr()."""
    try:
        return orjson.dumps(event, default=repr, option=_LOG_OPTIONS).decode()
    except TypeError:  # an integer over 64 bits, a nested dict with odd keys
        return _stdlib_encode(event)
