"""Byte-level edits of a client's JSON body, for the pass-through path.

A body goes upstream as the client's own bytes; when the router must change something
(the upstream model's name, asking for a stream's usage) it splices the change in
rather than re-serialising the whole body: for a 118 KB conversation, `json.dumps`
of the parsed payload takes about 0.8 ms, a splice a few microseconds. When a splice
cannot be placed with certainty the body is re-serialised, which is always correct:
from the bytes, parsed again exactly, so that no value changes on the way (the fast
parser the handler uses reads integers over 64 bits as floats).
"""

from __future__ import annotations

import json
import re
from typing import Any

from router.wire.fastjson import exact_loads

_MODEL_KEY = re.compile(rb'"model"\s*:\s*')
# A JSON string: the model's value, which parsing the body showed is a string.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_USAGE_OPTION = b'"stream_options":{"include_usage":true},'
# A \u escape of one of the letters of "model" (d e l m o): a key written that way is
# still `model` to a parser, but not to a byte search.
_ESCAPED_MODEL_LETTER = re.compile(rb"\\u00(?:6[45cdfCDF])")
# A \u escape of a UTF-16 surrogate: half of a pair, or a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def with_model(body: bytes, payload: dict[str, Any], model: str) -> bytes:
    """`body` with its top-level `model` set to `model`.

    Inside a JSON string a quote is escaped, so `"model"` in the bytes is a key or a
    whole string value; when it occurs once, and no key can spell `model` with escapes,
    it is the top-level key (the payload has it). Anything else (a nested schema naming
    a property `model`, a value "model", an escaped key) means re-serialising.
    """
    at = body.find(b'"model"')
    if (
        at >= 0
        and body.find(b'"model"', at + 1) < 0  # plain searches: no parsing of the body
        and _ESCAPED_MODEL_LETTER.search(body) is None
    ):
        key = _MODEL_KEY.match(body, at)
        value = _STRING.match(body, key.end()) if key is not None else None
        if value is not None:
            name = _encoded(model)
            return body[: value.start()] + name + body[value.end() :]
    return _dumps({**exact_loads(body), "model": model})


def with_usage_requested(body: bytes, payload: dict[str, Any]) -> bytes:
    """The body asking for a stream's usage chunk (`stream_options.include_usage`).

    Without stream_options (the usual case) the member is spliced in after the opening
    brace, leaving the client's bytes as they were; the body has a `model` member, so
    a comma after ours is always valid.
    """
    if "stream_options" not in payload:
        brace = body.find(b"{")
        return body[: brace + 1] + _USAGE_OPTION + body[brace + 1 :]
    exact = exact_loads(body)
    options = exact["stream_options"] or {}  # `null` is the same as leaving it out
    return _dumps({**exact, "stream_options": {**options, "include_usage": True}})


def utf8_text(body: bytes, payload: dict[str, Any]) -> bool:
    """Whether every string of the body has a UTF-8 form: not so when the client escaped
    a lone surrogate (`"\\ud800"`), which JSON allows and UTF-8 cannot hold. Only a body
    with a surrogate escape is looked at closely."""
    if _SURROGATE_ESCAPE.search(body) is None:
        return True
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _dumps(payload: dict[str, Any]) -> bytes:
    return _encoded(payload, separators=(",", ":"))


def _encoded(value: Any, **options: Any) -> bytes:
    """`value` as UTF-8 JSON. A lone surrogate (the client wrote `\\ud800`, which the
    stdlib parser accepts) has no UTF-8 form: such a value is written with every
    non-ASCII character escaped, as the client's own escape was."""
    try:
        return json.dumps(value, ensure_ascii=False, **options).encode()
    except UnicodeEncodeError:
        return json.dumps(value, **options).encode()
