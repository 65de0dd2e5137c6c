"""Prompt caching, per key: a prompt whose start this key saw within the cache lifetime
is partly served from cache, and the answer's usage says how many input tokens were.

Providers cache per key (per organisation): OpenAI caches prompt prefixes by itself,
Anthropic the blocks marked `cache_control`; both keep an entry about five minutes after
its last use. The simulator caches every message boundary of a chat-style prompt (no
minimum length; for Anthropic only when the body holds a `cache_control`), which is
enough to measure how often a router sends a conversation back to the key that holds
its prefix. What a prompt adds to the cache is reported as written (Anthropic's
`cache_creation_input_tokens`), and Anthropic's `input_tokens` is then what is left.
Bounded: at most `MAX_ENTRIES` prefixes per key, the least recently used dropped first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

from router.sim.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY, content_text, estimate_tokens

LIFETIME = 300.0  # seconds an entry lives after its last use
MAX_ENTRIES = 10_000

# (hash of the prompt up to and including a message, the prompt's tokens up to there)
Prefix = tuple[bytes, int]


def prompt_prefixes(
    messages: Sequence[dict[str, Any]], *, system: Any = None
) -> tuple[Prefix, ...]:
    """One entry per message boundary; the last one's tokens are the whole prompt's (as
    `estimate_prompt_tokens` counts them)."""
    digest = blake2b(digest_size=16)
    text = content_text(system) if system else ""
    tokens = TOKENS_PER_REPLY + (TOKENS_PER_MESSAGE + estimate_tokens(text) if text else 0)
    digest.update(json.dumps(system, sort_keys=True).encode())
    prefixes = []
    for message in messages:
        digest.update(json.dumps(message, sort_keys=True).encode())
        tokens += TOKENS_PER_MESSAGE + estimate_tokens(content_text(message.get("content")))
        prefixes.append((digest.copy().digest(), tokens))
    return tuple(prefixes)


class PromptCache:
    """One key's cached prefixes and when each expires."""

    __slots__ = ("_expires",)

    def __init__(self) -> None:
        self._expires: OrderedDict[bytes, float] = OrderedDict()

    def use(self, prefixes: Sequence[Prefix], now: float) -> int:
        """The input tokens served from cache (the longest live prefix); then every prefix
        of this prompt is cached, or kept alive, for another lifetime."""
        cached = 0
        for digest, tokens in prefixes:
            expires = self._expires.get(digest)
            if expires is not None and expires > now:
                cached = tokens
        for digest, _ in prefixes:
            self._expires[digest] = now + LIFETIME
            self._expires.move_to_end(digest)
        while len(self._expires) > MAX_ENTRIES:
            self._expires.popitem(last=False)
        return cached
