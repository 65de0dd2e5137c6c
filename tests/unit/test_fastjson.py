"""The per-request JSON codec: orjson's speed, the stdlib's answers."""

from __future__ import annotations

import json
import math

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


@pytest.mark.parametrize("data", [b"", b'{"model": "gpt-4o", "messages": [', b"\xff\xfe no"])
def test_it_refuses_what_the_stdlib_refuses_with_the_stdlibs_error(data: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        fastjson.loads(data)
    with pytest.raises(ValueError) as stdlib:
        json.loads(data)
    assert str(ours.value) == str(stdlib.value)


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
