"""A key's `headers:`, sent on every upstream request of that key.

OpenRouter's `HTTP-Referer` and `X-Title`, OpenAI's `OpenAI-Organization` and
`OpenAI-Project`: fixed per account, so they belong to the key rather than to each
client. A value may use `${VAR}` and is then a secret (redacted wherever it shows).
Refused here, once: headers the router's client owns (hop-by-hop ones, `Host`,
`Content-Length`, `Content-Type`) and credential headers, whose value belongs in
`api_key` where it is masked, redacted and sent in the provider's own way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from router.config.fields import Field

# RFC 9110 §5.6.2: a header name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_FRAMING = frozenset({"host", "content-length", "content-type", "content-encoding", "expect"})
_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
REFUSED = _HOP_BY_HOP | _FRAMING | _CREDENTIALS  # and x-router-*
HEADER_NAME = _TOKEN.pattern


@dataclass(frozen=True, slots=True)
class KeyHeaders:
    """The headers as they will be sent, and the values that came from a variable."""

    headers: dict[str, str]
    secrets: tuple[str, ...]
    unset: tuple[str, ...]  # variables with no value: the key is skipped


def parse_headers(at: Field) -> KeyHeaders:
    headers: dict[str, str] = {}
    secrets: list[str] = []
    unset: list[str] = []
    seen: dict[str, str] = {}
    for name, entry in at.named():
        lowered = name.lower()
        if not _TOKEN.match(name):
            raise entry.error("not a valid header name (letters, digits and -!#$%&'*+.^_`|~)")
        if lowered in seen:
            raise entry.error(f"given twice (as {seen[lowered]!r} too); header names ignore case")
        seen[lowered] = name
        if reason := _refused(lowered):
            raise entry.error(reason)
        expansion = entry.expand()
        if expansion.unset:
            unset.extend(expansion.unset)
            continue
        value = expansion.value.strip()
        if not (value.isascii() and value.replace("\t", " ").isprintable()):
            # Never quoted: the value may be a secret.
            raise entry.error("the value holds a line end, a control or a non-ASCII character")
        headers[lowered] = value  # lowercase, as the client's are: the key's replace them
        if expansion.referenced:
            secrets.append(value)
    return KeyHeaders(headers, tuple(secrets), tuple(dict.fromkeys(unset)))


def _refused(name: str) -> str | None:
    if name in _CREDENTIALS:
        return (
            "a credential header is not allowed here: put the credential in api_key, which "
            "the router sends in the provider's own header and keeps out of every log"
        )
    if name in _HOP_BY_HOP:
        return "a hop-by-hop header belongs to one connection and is not forwarded upstream"
    if name in _FRAMING:
        return "the router sets this header itself for each request"
    if name.startswith("x-router-"):
        return "x-router-* headers are the router's own"
    return None
