"""The per-request JSON codec: orjson's speed, the stdlib's answers."""

from __future__ import annotations

import json
import math
import random

import pytest

from router.wire import fastjson


@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "gpt-4o", "stream": true, "n": 1, "t": 0.5}',
        b'{"a": NaN, "b": -Infinity}',  # not JSON, but json.loads takes it
        b'{"text": "half an emoji \\ud83d"}',  # a lone surrogate, as JavaScript can send
        b'\xef\xbb\xbf{"model": "x"}',  # a UTF-8 byte order mark
        b'  [1, "two", null]  ',
    ],
)
def test_it_accepts_what_the_stdlib_accepts_with_the_same_values(data: bytes) -> None:
    got, want = fastjson.loads(data), json.loads(data)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    if isinstance(want, dict) and "a" in want:
        assert math.isnan(got["a"])


@pytest.mark.parametrize("data", [b"", b'{"model": "gpt-4o", "messages": [', b"\xef\xbb\xbf["])
def test_it_refuses_what_the_stdlib_refuses_with_the_stdlibs_error(data: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(data)
    with pytest.raises(ValueError) as stdlib:
        json.loads(data)
    assert str(ours.value) == str(stdlib.value)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_bytes_are_read_as_utf8_alone_where_the_stdlib_would_guess(encoding: str) -> None:
    """json.loads reads UTF-16 and UTF-32 bytes too; a body the router splices UTF-8 into
    or passes upstream as JSON must be UTF-8 (RFC 8259 8.1)."""
    data = '{"model": "gpt-4o"}'.encode(encoding)
    assert json.loads(data) == {"model": "gpt-4o"}
    with pytest.raises(ValueError):
        fastjson.loads(data)
    with pytest.raises(ValueError):
        fastjson.exact_loads(data)
    with pytest.raises(ValueError):
        fastjson.loads(b"\xff\xfe no")  # json.loads would try it as UTF-16


def test_exact_loads_keeps_big_integers() -> None:
    assert fastjson.exact_loads(b'{"seed": 1180591620717411303424}') == {
        "seed": 1180591620717411303424
    }


def test_log_text_is_one_json_line_whatever_the_values() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    event = {"event": "x", "n": 2**70, "o": Opaque(), "t": (1, 2), "s": "é\n"}
    line = fastjson.log_text(event)
    assert "\n" not in line
    assert json.loads(line) == {"event": "x", "n": 2**70, "o": "<opaque>", "t": [1, 2], "s": "é\n"}
    fast = fastjson.log_text({"event": "x", "o": Opaque(), 1: "int key"})
    assert json.loads(fast) == {"event": "x", "o": "<opaque>", "1": "int key"}


def _depth(value: object) -> int:
    """Containers nested in `value`, counted by recursion: the reference."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _random_value(rng: random.Random, depth: int) -> object:
    """A container `depth` deep, with siblings, scalars and padding around its spine."""
    if depth == 0:
        return rng.choice(["x" * rng.randrange(0, 3000), 7, None, "{[ in a string ]}" * 3])
    inner = _random_value(rng, depth - 1)
    siblings = [_random_value(rng, rng.randrange(0, min(depth, 3))) for _ in range(3)]
    if rng.random() < 0.5:
        return {"pad": "p" * rng.randrange(0, 200), "spine": inner, "more": siblings}
    return [*siblings[: rng.randrange(0, 4)], inner]


@pytest.mark.parametrize("limit", [3, 8, 128])
def test_too_deep_is_nesting_over_the_limit_for_small_and_large_bodies(limit: int) -> None:
    """Bodies on both sides of the size where the bracket count turns into searches
    (_COUNT_UP_TO), at the limit, one past it and far under it."""
    rng = random.Random(limit)
    sizes = {"small": 0, "large": 0}
    for _ in range(300):
        value = _random_value(rng, rng.choice([1, limit - 1, limit, limit + 1, limit + 5]))
        body = json.dumps(value).encode()
        sizes["small" if len(body) <= fastjson._COUNT_UP_TO else "large"] += 1
        assert fastjson.too_deep(body, value, limit) is (_depth(value) > limit), body[:200]
    assert min(sizes.values()) > 20, sizes  # both ways of counting were exercised


def test_too_deep_reads_a_long_shallow_conversation_as_shallow() -> None:
    """Hundreds of messages: more brackets than the limit, but three levels deep."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "w " * 2000}]}] * 400
    body = json.dumps({"model": "m", "messages": messages}).encode()
    assert not fastjson.too_deep(body, json.loads(body))
    deep = {"model": "m", "messages": messages, "x": json.loads(b"[" * 129 + b"]" * 129)}
    assert fastjson.too_deep(json.dumps(deep).encode(), deep)
