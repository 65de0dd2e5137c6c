"""Byte-level edits of client bodies: the change spliced in, every other byte kept."""

from __future__ import annotations

import json

from router.wire import fastjson
from router.wire.body import with_model, with_usage_requested

# The order the openai SDK sends: messages first, the model after them.
SDK_BODY = json.dumps(
    {"messages": [{"role": "user", "content": 'say "model": "x"'}], "model": "fast", "n": 1}
).encode()


def test_the_model_value_is_spliced_in_and_nothing_else_moves() -> None:
    edited = with_model(SDK_BODY, json.loads(SDK_BODY), "gpt-4.1-mini")
    assert edited == SDK_BODY.replace(b'"model": "fast"', b'"model": "gpt-4.1-mini"')
    assert json.loads(edited)["messages"] == json.loads(SDK_BODY)["messages"]


def test_names_needing_escapes_and_spaced_keys_are_written_as_json() -> None:
    body = b'{ "model" :\n "a\\"b" , "stream": true }'
    edited = with_model(body, json.loads(body), 'new "quoted" é')
    assert json.loads(edited) == {"model": 'new "quoted" é', "stream": True}
    assert edited.startswith(b'{ "model" :\n ') and edited.endswith(b' , "stream": true }')


def test_a_nested_model_key_makes_it_reserialise_the_body() -> None:
    payload = {
        "model": "fast",
        "tools": [{"type": "function", "function": {"parameters": {"model": {"type": "string"}}}}],
    }
    body = json.dumps(payload).encode()
    edited = with_model(body, payload, "gpt-4.1-mini")
    assert json.loads(edited) == {**payload, "model": "gpt-4.1-mini"}


def test_a_repeated_top_level_model_key_makes_it_reserialise_the_body() -> None:
    body = b'{"model": "a", "model": "fast"}'  # json keeps the last; so must the edit
    assert json.loads(with_model(body, json.loads(body), "m")) == {"model": "m"}


def test_a_top_level_key_written_with_escapes_is_the_one_that_changes() -> None:
    """`"\\u006dodel"` is `model` to a parser; the one literal `"model"` is nested."""
    body = b'{"\\u006dodel":"gpt-4o","metadata":{"model":"y"}}'
    assert json.loads(with_model(body, json.loads(body), "NEW")) == {
        "model": "NEW",
        "metadata": {"model": "y"},
    }


def test_escaped_text_elsewhere_still_gets_a_splice() -> None:
    body = b'{"messages":[{"role":"user","content":"caf\\u00e9"}],"model":"fast"}'
    assert with_model(body, json.loads(body), "m") == body.replace(b'"fast"', b'"m"')


def test_usage_is_asked_for_by_splice_or_by_merging_the_clients_options() -> None:
    body = b'{"model":"gpt-4o","stream":true}'
    spliced = with_usage_requested(body, json.loads(body))
    assert spliced == b'{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true}'
    own = b'{"model":"gpt-4o","stream":true,"stream_options":{"continuous_usage_stats":true}}'
    merged = json.loads(with_usage_requested(own, json.loads(own)))
    assert merged["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}


def test_reserialising_keeps_integers_too_big_for_the_fast_parser() -> None:
    # The handler parses with orjson, which reads 2**70 as a float; the body that goes
    # upstream must still say 1180591620717411303424.
    body = b'{"model": "a", "model": "fast", "seed": 1180591620717411303424}'
    edited = with_model(body, fastjson.loads(body), "m")
    assert b'"seed":1180591620717411303424' in edited
    own = b'{"model":"a","stream_options":{"x":1},"seed":1180591620717411303424}'
    assert b"1180591620717411303424}" in with_usage_requested(own, fastjson.loads(own))
