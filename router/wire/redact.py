"""One redaction for every text that leaves the router: log lines, error bodies, error events.

It replaces the configured secrets (provider keys, client keys, admin keys) wherever they
appear, and anything shaped like a provider key or a credential header value. JSON string
escapes are read first: an upstream that writes a key as `\\u0073\\u006b-...` (or `\\/` for
`/`) hides it from a plain search, so printable ASCII escapes are decoded before matching.
The decoded text is kept only when something was redacted, so clean text is untouched.

Text that is cut short (a log field, an error message) must be redacted before it is
cut: a key cut in half no longer matches, and its first half is still a leak.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable

from router.types import Config

REDACTED = "[redacted]"
_REDACTED_BYTES = REDACTED.encode()
# A local server's placeholder key (`ollama`, `lm-studio`, `not-needed`: a word a model
# may well write) is not looked for in a model's text (StreamRedaction); a secret is:
# 16 characters or more, or a shorter one with a digit, a capital or a symbol in it.
_PLACEHOLDER = re.compile(r"[a-z][a-z-]{0,14}")

# Provider key shapes, and the values of credential headers as a log line or an echoed
# request shows them (`Authorization: Bearer x`, `"x-api-key": "x"`, `api-key=x`); the
# header's name (group `head`) stays, so a reader still sees which header it was.
_KEY_SHAPES = (
    r"sk-ant-[A-Za-z0-9_-]{8,}|sk-(?:proj-)?[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{20,}"
    r"|(?P<head>(?i:authorization|x-api-key|api-key|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?"
    r"(?i:(?:bearer|basic)\s+)?)[^\s\"',}]{6,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)
# Every branch of _KEY_SHAPES contains one of these: a line with none of them, and none
# of the secrets, skips the regex. The key prefixes are matched case-sensitively, so they
# are searched for as they are; the header names and `bearer` in the lowercased text.
_PREFIX_HINTS = ("sk-", "AIza")
_SHAPE_HINTS = ("bearer", "authorization", "api-key")


# A large pool's secrets are found by sampling the text rather than secret by secret.
# Take the pool's secrets of at least _LONG characters, and `stride` = the shortest of
# them, less _GRAM - 1 (at most _MAX_STRIDE). Every _GRAM-character piece of those
# secrets that starts within their first `stride` characters goes into one set, and the
# text is sampled at every stride-th position. Such a secret, wherever it lies in the
# text, covers a sample that starts within its first `stride` characters, and that
# sample's piece is in the set: none is missed, and a text costs len(text) / stride
# lookups, whatever the size of the pool. A sample that matches without a secret (rare)
# costs the full regex, no more. Shorter secrets are tested one by one.
_GRAM = 8
_LONG = 16
_MAX_STRIDE = 32  # keeps the set at most 32 pieces a secret
# Up to this many secrets a substring test each costs less than the samples (a test
# costs about 0.15 us on a 450-character request log line; the samples, 14 to 28
# lookups there, about 1.5 us). With 128 tests, the rule before the samples, a log
# line's check took 18.5 us on this line.
_FEW_SECRETS = 8


def _replace(match: re.Match[str]) -> str:
    head = match.group("head")
    return REDACTED if head is None else head + REDACTED


# A JSON escape for a printable ASCII character (`\u0073`, `\/`), or an escaped backslash,
# which is skipped as a pair so that `\\u0073` (a backslash, then "u0073") stays as it is.
_ESCAPE = re.compile(r"\\(\\|/|u00[2-7][0-9A-Fa-f])")
_KEEP_ESCAPED = frozenset('"\\\x7f')


def _unescape(match: re.Match[str]) -> str:
    escape = match.group(1)
    if escape == "\\":
        return match.group(0)
    if escape == "/":
        return "/"
    char = chr(int(escape[1:], 16))
    return match.group(0) if char in _KEEP_ESCAPED else char


def unescape_printable(text: str) -> str:
    """`text` with JSON escapes of printable ASCII decoded; still valid JSON if it was."""
    return _ESCAPE.sub(_unescape, text) if "\\" in text else text


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> re.Pattern[str]:
    return re.compile(source)


class Redactor:
    """Replaces configured secrets and anything shaped like a key or credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # A secret as written, and as a JSON encoder would escape it.
        forms = {form for s in secrets if len(s) >= 6 for form in (s, json.dumps(s)[1:-1])}
        exact = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        # Compiled on first need (a line that holds something to replace): with a pool of
        # a thousand keys it takes 0.1 s, which a start-up or a reload need not wait for.
        self._source = f"{exact}|{_KEY_SHAPES}" if exact else _KEY_SHAPES
        self._compiled: re.Pattern[str] | None = None
        # Substring tests cost far less than the regex, and nearly every line fails all
        # of them: then the regex is skipped.
        self._secrets = tuple(sorted(forms))
        # A large pool: its long secrets found by the samples, the rest one by one.
        self._pieces: frozenset[str] | None = None
        self._stride = _MAX_STRIDE
        self._others = self._secrets
        long = [form for form in self._secrets if len(form) >= _LONG]
        if len(forms) > _FEW_SECRETS and long:
            stride = min(_MAX_STRIDE, min(map(len, long)) - _GRAM + 1)
            self._pieces = frozenset(
                form[start : start + _GRAM] for form in long for start in range(stride)
            )
            self._stride = stride
            self._others = tuple(form for form in self._secrets if len(form) < _LONG)

    def _suspect(self, text: str) -> bool:
        # Loops, not any() over a generator: this runs on every log line, and a
        # generator's frame and resumptions cost more than the substring tests.
        for secret in self._others:
            if secret in text:
                return True
        pieces = self._pieces
        if pieces is not None:
            # A loop: a map over slice objects, all in C, cost nearly twice as much.
            for start in range(0, len(text) - _GRAM + 1, self._stride):
                if text[start : start + _GRAM] in pieces:
                    return True
        for hint in _PREFIX_HINTS:
            if hint in text:
                return True
        lowered = text.lower()
        if not lowered.isascii():
            # What the regex's (?i:) takes for an `i` and str.lower() does not give as
            # one: U+0130 (lowered to `i` and a combining dot) and the dotless U+0131.
            lowered = lowered.replace("i\u0307", "i").replace("\u0131", "i")
        for hint in _SHAPE_HINTS:  # noqa: SIM110 - as above
            if hint in lowered:
                return True
        return False

    def scrub(self, text: str) -> str:
        """`text` with every secret and key-shaped string replaced by `[redacted]`; the
        same object when there was nothing to replace."""
        seen = unescape_printable(text)
        if not self._suspect(seen):
            return text
        if self._compiled is None:
            self._compiled = _compile(self._source)
        scrubbed = self._compiled.sub(_replace, seen)
        return text if scrubbed == seen else scrubbed

    def scrub_bytes(self, data: bytes) -> bytes:
        """`data` (UTF-8, as an upstream sent it) redacted; the same object when clean."""
        text = data.decode("utf-8", "surrogateescape")
        scrubbed = self.scrub(text)
        return data if scrubbed is text else scrubbed.encode("utf-8", "surrogateescape")


class StreamRedaction:
    """Redacts a stream the relay forwards event by event, and an answer that went well.
    The relay passes on whole events only (the stream watch holds an unfinished one), so
    a secret is never split between two pieces.

    An upstream can echo only what it was sent: the route's key and the key's header
    secrets. Those, as written or JSON-escaped, are what each piece (or answer) is
    searched for, a substring test or two whatever the size of the pool, and exactly
    those bytes are replaced: the rest of a model's text stays as it was, and JSON
    stays JSON. A local server's placeholder key (_PLACEHOLDER: `ollama`) is not looked
    for in a model's text, which may well say it. A piece that holds the dialect's
    error hint is redacted in full (escapes, key shapes), like an error body.
    """

    __slots__ = ("_error_hint", "_forms", "_redactor")

    def __init__(self, secret: str, error_hint: bytes, also: tuple[str, ...] = ()) -> None:
        secrets = (secret, *also)
        self._redactor = _redactor_for(secrets)
        forms = {
            form
            for s in secrets
            if len(s) >= 6 and not _PLACEHOLDER.fullmatch(s)
            for form in (s.encode(), json.dumps(s)[1:-1].encode())
        }
        self._forms = tuple(sorted(forms, key=len, reverse=True))  # one, usually
        self._error_hint = error_hint

    def clean(self, data: bytes, hinted: bool | None = None) -> bytes:
        """`data` redacted; `hinted`: whether it names the error hint, when the caller
        has searched already (the stream's watch has)."""
        if not data:
            return data  # the relay's empty rest, mostly: every search saved
        if hinted is None:
            hinted = data.find(self._error_hint) >= 0
        if hinted:
            return self._redactor.scrub_bytes(data)
        # answer(), inline: this runs for every piece of every stream.
        for form in self._forms:
            if data.find(form) >= 0:
                data = data.replace(form, _REDACTED_BYTES)
        return data

    def answer(self, data: bytes) -> bytes:
        """`data` without the secrets the upstream was sent; the same object when it
        holds none (nearly always)."""
        for form in self._forms:
            if data.find(form) >= 0:
                data = data.replace(form, _REDACTED_BYTES)
        return data

    def text(self, message: str) -> str:
        return self._redactor.scrub(message)


@functools.lru_cache(maxsize=256)
def stream_redaction(secret: str, error_hint: bytes, also: tuple[str, ...] = ()) -> StreamRedaction:
    """The one (stateless) redaction for streams and answers of a key in a dialect."""
    return StreamRedaction(secret, error_hint, also)


def config_secrets(config: Config) -> list[str]:
    """Every secret routes.yaml holds: provider keys, client keys, admin keys, and key
    header values that came from a ${VAR}."""
    server = config.server
    keys = config.keys.values()
    return [
        *(key.api_key for key in keys),
        *(secret for key in keys for secret in key.header_secrets),
        *server.client_keys,
        *server.admin_keys,
    ]


@functools.lru_cache(maxsize=256)
def _redactor_for(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def clip(text: str, limit: int, secret: str) -> str:
    """At most `limit` characters of `text`, redacted (`secret` and key shapes) before it
    is cut: cut first, a key split at the end would no longer match, yet half of it leaks.
    For code that knows one key (the route's) but not the configured set."""
    return _redactor_for((secret,)).scrub(text)[:limit]
