"""Conversation affinity: the same conversation on the same key, where its prompt cache is.

Providers cache prompts per key (per organisation), so consecutive turns of a
conversation sent to different keys of one tier miss the cache. `conversation_key`
names the conversation from what the client sends; `rendezvous` picks, among the
available routes, the one with the highest weighted random score for that name
(highest-random-weight hashing, Thaler & Ravishankar 1998; weighted as in Schindelhauer
& Schomaker 2005: score = -weight / ln(u), u uniform in (0, 1) from hash(key, route)).
Every replica computes the same winner with no shared state, and when the winner
becomes unavailable only the conversations it held move, each to its next-best route.

The key, in order: `prompt_cache_key` (OpenAI's own cache-routing hint), `conversation`
(Responses), `metadata.user_id` (Anthropic; Claude Code puts its session there), `user`
(OpenAI), `previous_response_id` (Responses), else a hash of the start of the
conversation (system prompt or instructions and the first two messages or input items):
the part every turn resends unchanged. Only strings already in the parsed payload are
hashed, each cut at `_PREFIX_CHARS`, so the cost does not grow with the conversation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

from router.types import Route

_ID_FIELDS = ("prompt_cache_key", "conversation")
_LATER_ID_FIELDS = ("user", "previous_response_id")
_PREFIX_CHARS = 4096  # of each string of the conversation's start
_SCALE = 1.0 / 2**64


def conversation_key(payload: dict[str, Any]) -> bytes:
    """A name for the conversation `payload` belongs to; b"" when there is nothing to name."""
    for name in _ID_FIELDS:
        if key := _id(payload.get(name)):
            return key
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and (key := _id(metadata.get("user_id"))):
        return key
    for name in _LATER_ID_FIELDS:
        if key := _id(payload.get(name)):
            return key
    digest = blake2b(digest_size=16)
    for name in ("system", "instructions"):
        _feed(digest, payload.get(name))
    for name in ("messages", "input"):
        start = payload.get(name)
        if isinstance(start, list):
            for item in start[:2]:
                _feed(digest, item.get("content") if isinstance(item, dict) else item)
        else:
            _feed(digest, start)
    return b"p:" + digest.digest()


def _id(value: Any) -> bytes:
    if isinstance(value, str) and value:
        return b"i:" + value[:_PREFIX_CHARS].encode("utf-8", "replace")
    if isinstance(value, dict) and isinstance(value.get("id"), str):  # Responses' conversation
        return _id(value["id"])
    return b""


def _feed(digest: Any, value: Any) -> None:
    """The strings of `value` (a string, or content parts carrying `text`) into `digest`."""
    if isinstance(value, str):
        digest.update(value[:_PREFIX_CHARS].encode("utf-8", "replace"))
    elif isinstance(value, list):
        for part in value[:4]:
            if isinstance(part, str):
                digest.update(part[:_PREFIX_CHARS].encode("utf-8", "replace"))
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                digest.update(part["text"][:_PREFIX_CHARS].encode("utf-8", "replace"))
    digest.update(b"\x00")


def score(key: bytes, route: Route) -> float:
    """The route's weighted rendezvous score for `key`: the highest wins."""
    raw = blake2b(route.id.encode() + b"\x00" + key, digest_size=8).digest()
    uniform = (int.from_bytes(raw, "big") + 0.5) * _SCALE  # in (0, 1), never 0 nor 1
    return -route.weight / math.log(uniform)


def rendezvous(key: bytes, routes: Sequence[Route]) -> Route:
    return max(routes, key=lambda route: score(key, route))
