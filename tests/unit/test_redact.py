"""The redaction every log line, error body and relayed stream passes through."""

from __future__ import annotations

import json
import random
import re

import pytest

from router.wire.dialects import OPENAI_CHAT
from router.wire.redact import (
    _KEY_SHAPES,
    REDACTED,
    Redactor,
    StreamRedaction,
    clip,
    unescape_printable,
)
from router.wire.stream_watch import StreamWatch

AZURE = "0f3a9c5e7b1d4f2a8c6e0b9d3f5a7c1e"
REDACTOR = Redactor([AZURE, "router-client-key-0123456789"])


def escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"key {AZURE}.", f"key {REDACTED}.", id="configured"),
        pytest.param(f'{{"m": "{escaped(AZURE)}"}}', f'{{"m": "{REDACTED}"}}', id="u-escaped"),
        pytest.param(
            f'{{"m": "{escaped("sk-")}proj-abcdefghij"}}', f'{{"m": "{REDACTED}"}}', id="shape"
        ),
        pytest.param("Authorization: Basic dXNlcjprZXk=", f"Authorization: Basic {REDACTED}"),
        pytest.param('"x-api-key": "abcdefgh12"', f'"x-api-key": "{REDACTED}"', id="header"),
        pytest.param("Bearer router-client-key-0123456789\\x01", f"{REDACTED}\\x01", id="bearer"),
    ],
)
def test_secrets_are_replaced_in_every_form(text: str, expected: str) -> None:
    assert REDACTOR.scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    ["plain words", 'a "quoted \\"escape\\" and \\u00e9"', "a\\\\u0073k-proj-abcdefghij"],
)
def test_clean_text_is_the_same_object_escapes_untouched(text: str) -> None:
    assert REDACTOR.scrub(text) is text


def test_clip_redacts_before_it_cuts() -> None:
    text = "x" * 190 + AZURE
    assert clip(text, 200, AZURE) == ("x" * 190 + REDACTED)[:200]
    assert AZURE[:8] not in clip(text, 200, AZURE)


def test_a_stream_never_splits_a_secret_between_two_writes() -> None:
    """The relay writes what the watch passes on, whole events only, each redacted."""
    watch = StreamWatch(OPENAI_CHAT, 1 << 20)
    stream = StreamRedaction(AZURE, OPENAI_CHAT.error_hint)
    event = f'data: {{"error": {{"message": "{AZURE}"}}}}\n\n'.encode()
    half = event.index(AZURE.encode()) + 10
    written = stream.clean(watch.see(b'data: {"x": 1}\n\n' + event[:half]))
    assert written == b'data: {"x": 1}\n\n'  # the unfinished event waits
    written += stream.clean(watch.see(event[half:]))
    assert AZURE.encode()[:10] not in written and REDACTED.encode() in written


def test_a_large_pool_of_secrets_is_found_anywhere_in_a_line() -> None:
    """Past a few secrets the search samples the line (its cost follows the line, not
    the pool; see the samples test below): the same secrets must still be found,
    glued to other key characters on either side, JSON-escaped or not, and secrets with
    other characters (searched one by one) too."""
    pool = [f"{n:04d}-{'k' * 6}-{n * 7919:08x}" for n in range(300)]
    odd = ["pass:word!with spaces", "other:secret#2"]
    redactor = Redactor([*pool, *odd])
    for secret in (pool[0], pool[157], pool[-1], *odd):
        for text in (
            f'{{"model": "{secret}"}}',
            f"glued{secret}glued",
            f"x=Bearer{secret}.",
            json.dumps({"m": secret}),
        ):
            out = redactor.scrub(text)
            assert secret not in out and REDACTED in out, (secret, text)
    clean = '{"event":"request","route":"k17/gpt-4o","request_id":"5d20a586553b9ca8"}'
    assert redactor.scrub(clean) is clean


# Keys an upstream echoes: one JSON writes as it is, one it escapes.
ECHOED_SECRETS = ["sk-plain-0123456789abcdef", 'pass"word\\with/odd-0123456789']


@pytest.mark.parametrize("secret", ECHOED_SECRETS)
def test_a_stream_piece_that_echoes_the_key_in_text_is_redacted(secret: str) -> None:
    """No error hint in the piece: only the key's own searches find it, as written or as
    JSON writes it (for a key JSON writes as it is, the two are one search)."""
    stream = StreamRedaction(secret, OPENAI_CHAT.error_hint)
    for shown in (secret, json.dumps(secret)[1:-1]):
        piece = f'data: {{"choices":[{{"delta":{{"content":"{shown}"}}}}]}}\n\n'.encode()
        assert b'"error"' not in piece
        cleaned = stream.clean(piece)
        assert shown.encode() not in cleaned and REDACTED.encode() in cleaned, shown
    clean = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    assert stream.clean(clean) is clean


@pytest.mark.parametrize("secret", ECHOED_SECRETS)
def test_an_answer_that_went_well_loses_the_key_and_nothing_else(secret: str) -> None:
    """The key, as written or as JSON writes it, is replaced, exactly: the model's own
    `sk-...` or `Bearer ...` beside it stays, and the answer stays the same JSON. An
    answer without the key is the same object."""
    stream = StreamRedaction(secret, OPENAI_CHAT.error_hint)
    example = 'curl -H "Authorization: Bearer YOUR_API_KEY" -d sk-proj-abcdefghijklmnop'
    body = json.dumps({"choices": [{"message": {"content": f"key {secret}; {example}"}}]})
    cleaned = stream.answer(body.encode())  # the key as JSON writes it
    content = json.loads(cleaned)["choices"][0]["message"]["content"]
    assert content == f"key {REDACTED}; {example}"
    assert stream.answer(b"key " + secret.encode() + b" end") == b"key [redacted] end"
    own = json.dumps({"choices": [{"message": {"content": example}}]}).encode()
    assert stream.answer(own) is own


def test_placeholders_are_not_looked_for_in_a_models_text_short_secrets_are() -> None:
    """`api_key: ollama` is a local server's placeholder, and a word a model may say; a
    short self-hosted token is a secret, and so is a key's header secret (a ${VAR} in
    `headers:`), sent upstream like its key."""
    stream = StreamRedaction("ollama", OPENAI_CHAT.error_hint, ("tok-123456789",))
    said = b'{"content":"install ollama"}'
    assert stream.answer(said) is said and stream.clean(said) is said
    echoed = b'{"content":"sent tok-123456789"}'
    assert stream.answer(echoed) == b'{"content":"sent [redacted]"}'
    for placeholder in ("lm-studio", "not-needed"):
        text = f'{{"content":"use {placeholder}"}}'.encode()
        assert StreamRedaction(placeholder, OPENAI_CHAT.error_hint).answer(text) is text
    keyless = StreamRedaction("", OPENAI_CHAT.error_hint)
    assert keyless.answer(said) is said
    # An error piece is still redacted in full, the placeholder and key shapes too.
    error = b'data: {"error": {"message": "bad key ollama"}}\n\n'
    assert b"ollama" not in stream.clean(error)


def test_the_watch_says_which_pieces_name_an_error_and_the_redaction_trusts_it() -> None:
    """The relay passes the watch's search on (`hinted`) rather than searching again:
    an error event is redacted in full, key shapes included, other pieces are not."""
    watch = StreamWatch(OPENAI_CHAT, 1 << 20)
    stream = StreamRedaction(AZURE, OPENAI_CHAT.error_hint)
    text = b'data: {"choices":[{"delta":{"content":"sk-proj-abcdefghijklmnopqrstuv"}}]}\n\n'
    assert stream.clean(watch.see(text), watch.hinted) is text and not watch.hinted
    shaped = b'data: {"error": {"message": "bad key sk-proj-abcdefghijklmnopqrstuv"}}\n\n'
    out = stream.clean(watch.see(shaped), watch.hinted)
    assert watch.hinted and b"sk-proj-abcdefghij" not in out and REDACTED.encode() in out


def _texts() -> list[str]:
    """Lines for scrub_bytes: clean, with a secret or a key shape in each of its forms,
    escaped, non-ASCII, and the Kelvin sign that str.lower() folds to `k`."""
    return [
        '{"event":"request","model":"gpt-4o","status":200}',
        f'{{"model":"{AZURE}"}}',
        f'{{"model":"x{AZURE[:-1]}"}}',  # a secret cut short is not that secret
        '{"model":"sk-proj-abcdefghijkl"}',
        '{"h":"AUTHORIZATION: BEARER abcdefghijkl"}',
        '{"h":"X-API-KEY=abcdefgh12"}',
        '{"h":"x-api-\u212aey: abcdefgh12"}',  # Kelvin sign: only the text path folds it
        f'{{"m":"{escaped(AZURE)}"}}',
        '{"m":"caf\u00e9 sk-abcdefghijkl"}',
        '{"m":"caf\u00e9"}',
        '{"m":"a \\"quoted\\" word"}',
        "AIzaSyA0123456789abcdefghijkl",
    ]


@pytest.mark.parametrize("text", _texts())
def test_bytes_are_redacted_exactly_as_their_text(text: str) -> None:
    data = text.encode()
    scrubbed = REDACTOR.scrub_bytes(data)
    assert scrubbed.decode() == REDACTOR.scrub(text)
    if REDACTOR.scrub(text) is text:
        assert scrubbed is data  # clean: handed back as it came


# What the key shapes are made of, in every case the regex's (?i:) parts take: the
# Kelvin sign for `k`, the dotted capital and the dotless `i`, the long `s`, and others.
_SHAPE_PARTS = [
    "sk-", "SK-", "sk-ant-", "sk-proj-", "AIza", "aiza", "AIZA", "bearer", "BeArEr",
    "authorization", "AUTHORIZATION", "author\u0130zation", "author\u0131zation",
    "AUTHOR\u0130ZATION", "api-key", "API-KEY", "api-\u212aey", "\u0130", "\u0131",
    "\u212a", "\u017f", "i\u0307", "x-goog-", ": ", "=", '"', " ", "\\u0073", "\\/",
    "abcdefgh", "0123456789", "-", "_", "\u00e9", "\n",
]  # fmt: skip


def test_a_text_the_hints_pass_over_holds_nothing_the_key_shapes_match() -> None:
    """The hints are only a shortcut: whatever text they let skip the regex must be text
    the regex would leave as it is, in any case and with the non-ASCII letters that
    (?i:) matches to ASCII ones."""
    shapes = re.compile(_KEY_SHAPES)
    redactor = Redactor()
    rng = random.Random(15)
    skipped = matched = 0
    for _ in range(20_000):
        text = "".join(rng.choice(_SHAPE_PARTS) for _ in range(rng.randint(1, 8)))
        seen = unescape_printable(text)
        if shapes.search(seen) is not None:
            matched += 1
            assert redactor._suspect(seen), text
            assert redactor.scrub(text) != text
        elif not redactor._suspect(seen):
            skipped += 1
            assert redactor.scrub(text) is text
    assert matched > 1_000 and skipped > 1_000  # both sides were reached


def test_the_samples_of_a_large_pool_miss_no_secret_wherever_it_lies() -> None:
    """A pool past a few secrets is searched by samples of the text (its cost follows
    the text, not the pool): a secret of any length, at any position of a text of any
    length, as written or as JSON escapes it, is still found, and a text that holds none
    and no key shape is the same object."""
    rng = random.Random(16)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    found = clean = 0
    for _ in range(300):
        # Lengths around the stride's limits and the line between sampled and tested.
        pool = [
            "".join(
                rng.choice(alphabet)
                for _ in range(rng.choice((6, 15, 16, 17, 23, 24, 39, 40, 41, 80)))
            )
            for _ in range(rng.randint(9, 40))
        ]
        pool.append('pass"word/with\\odd-' + "".join(rng.choice(alphabet) for _ in range(20)))
        redactor = Redactor(pool)
        assert redactor._pieces is not None  # the pool is searched by samples
        secret = rng.choice(pool)
        shown = rng.choice((secret, json.dumps(secret)[1:-1]))
        filler = "".join(rng.choice("xyz .:,{}") for _ in range(rng.randint(0, 120)))
        at = rng.randint(0, len(filler))
        text = filler[:at] + shown + filler[at:]
        out = redactor.scrub(text)
        assert shown not in out and REDACTED in out, (pool, text)
        found += 1
        if redactor.scrub(filler) is filler:
            clean += 1
        # The shortest sampled secret has one sample in it: at the end of texts of every
        # length, that sample is each position in turn, the last one included.
        shortest = min((s for s in pool if len(s) >= 16), key=len)
        for length in range(2 * redactor._stride):
            text = ("xyz ." * 20)[:length] + shortest
            assert shortest not in redactor.scrub(text), (shortest, text)
    assert found == 300 and clean > 250  # the filler alone is left alone, nearly always
