"""Which routes' context windows can hold a request's prompt.

A cheap estimate first (about 4 bytes a token): a prompt well under a window fits and
one far over it does not, with no counting. Only near a window is the prompt counted
exactly, with litellm's counter, in a thread; that imports litellm on first use, so
it happens only for prompts that are actually close to a limit. Without litellm (the
`translate` extra), the estimate stands.

A prompt larger than `COUNT_AT_MOST` bytes is not counted: near a window it is sent, and
the provider judges (its context-length answer goes to the context fallback, at the
cost of one attempt it does not charge for). Counting multi-MB text took a gigabyte of
native memory per burst (Hugging Face's tokenizers on the thread pool, several at once,
outside anything the router bounds), and glibc kept much of it (helper-69).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from router.types import Route
from router.upstream.translate.runtime import token_count

_BYTES_PER_TOKEN = 4
# Around a window the estimate is not trusted; from half to twice it, count exactly.
_SURE_FITS, _SURE_TOO_BIG = 0.5, 2.0
# The largest body whose prompt is counted: a 128k window's whole zone (256 KB to 1 MB
# of body) still is; a 1M window's (2 to 8 MB) is left to the provider.
COUNT_AT_MOST = 1 << 20


class PromptSize:
    """One request's prompt size, estimated at once and counted at most once."""

    def __init__(self, body: bytes, messages: Any) -> None:
        self.estimate = len(body) // _BYTES_PER_TOKEN
        self._messages = messages
        self._exact: int | None = None
        # Counted near a window, or sent for the provider to judge (COUNT_AT_MOST).
        self._countable = len(body) <= COUNT_AT_MOST

    def fits(self, window: int | None) -> bool:
        """Whether the prompt surely fits `window` (the smallest of a route set's, None
        when none is known): then no route of the set needs a look."""
        return window is None or self.estimate <= window * _SURE_FITS

    async def too_big_for(self, routes: Iterable[Route]) -> frozenset[str]:
        """Ids of the routes whose known window cannot hold this prompt."""
        out: set[str] = set()
        for route in routes:
            window = route.max_input_tokens
            if window is None or self.estimate <= window * _SURE_FITS:
                continue
            if self.estimate >= window * _SURE_TOO_BIG or (
                self._countable and await self.exact(route) > window
            ):
                out.add(route.id)
        return frozenset(out)

    async def exact(self, route: Route) -> int:
        if self._exact is None:
            if not isinstance(self._messages, list):
                self._exact = self.estimate  # nothing countable: trust the estimate
            else:
                counted = await asyncio.to_thread(token_count, route.model, self._messages)
                self._exact = counted if counted >= 0 else self.estimate
        return self._exact
