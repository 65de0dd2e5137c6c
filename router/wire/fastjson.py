"""JSON on the per-request path: orjson where it gives the same answer, the stdlib otherwise.

Every request body is parsed and every request ends with a JSON log line; orjson does
each about five times faster than `json` (bench/cpu.py). It is stricter than the stdlib,
so anything it refuses (NaN, a lone surrogate escape, a byte order mark, an integer
over 64 bits when writing) falls back to `json`, and callers see exactly what `json`
would have accepted or raised, but for one thing: bytes are read as UTF-8 alone, where
`json` would also guess UTF-16 or UTF-32. It reads integers over 64 bits as floats, so code that
re-serialises a client's body must parse it with `exact_loads` instead.

Nesting deep enough to exhaust Python's recursion (a body of 100,000 `[`) is a
`ValueError` like any other malformed JSON, never a RecursionError: these functions
read bytes from clients and upstreams. `too_deep` is the request path's bound on
nesting, so that nothing after it (the stdlib's encoder, litellm) recurses too far.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_LOG_OPTIONS = orjson.OPT_NON_STR_KEYS
_stdlib_encode = json.JSONEncoder(default=repr).encode


# The deepest nesting a request body may have. Real requests nest a few levels (a JSON
# schema in a tool definition perhaps twenty); what the router does with a body after
# parsing it (re-serialising it, litellm's copies and conversions) recurses a few
# Python frames per level, and Python stops at 1,000 frames.
MAX_DEPTH = 128


def loads(data: bytes | str) -> Any:
    """Parse `data`; raises ValueError (or UnicodeDecodeError) as `json.loads` would,
    and ValueError for nesting too deep to parse."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return exact_loads(data)  # accepts what orjson does not, or raises json's own error


def exact_loads(data: bytes | str) -> Any:
    """`json.loads`: every value as written, big integers included. Bytes are UTF-8
    (JSON between systems is, RFC 8259 8.1; a byte order mark is dropped, as `json`
    drops it): `json` would also read UTF-16 and UTF-32, which the router cannot edit
    or pass on as JSON, so they raise UnicodeDecodeError or ValueError here."""
    try:
        return json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


def too_deep(body: bytes, value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value`, parsed from `body`, nests containers more than `limit` deep.

    Every level opens a bracket, so a body with few brackets is shallow without looking
    (the usual case); otherwise the containers are walked level by level, without
    recursion.
    """
    if not isinstance(value, _CONTAINERS) or not _brackets_over(body, limit):
        return False
    level = [value]
    for _ in range(limit):
        inner: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            inner.extend([child for child in children if isinstance(child, _CONTAINERS)])
        if not inner:
            return False
        level = inner
    return True


# A tuple, not `dict | list`: that expression builds a new union on every evaluation, and
# isinstance() reads a tuple about twice as fast.
_CONTAINERS = (dict, list)
# Up to this size two counts of the body are cheapest. Past it they cost more than the
# parse (about 1 ms a megabyte, one byte at a time), while memchr skips from bracket
# to bracket and stops once there are more than `limit`.
_COUNT_UP_TO = 2048


def _brackets_over(body: bytes, limit: int) -> bool:
    """Whether `body` has more than `limit` opening brackets."""
    if len(body) <= _COUNT_UP_TO:
        return body.count(b"[") + body.count(b"{") > limit
    seen = 0
    for opener in (b"{", b"["):
        at = body.find(opener)
        while at >= 0:
            seen += 1
            if seen > limit:
                return True
            at = body.find(opener, at + 1)
    return False


def log_text(event: dict[str, Any]) -> str:
    """A log event as one line of JSON; values JSON cannot hold are written as repr()."""
    try:
        return orjson.dumps(event, default=repr, option=_LOG_OPTIONS).decode()
    except TypeError:  # an integer over 64 bits, a nested dict with odd keys
        return _stdlib_encode(event)
