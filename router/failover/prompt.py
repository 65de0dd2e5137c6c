"""Which routes' context windows can hold a request's prompt.

A cheap estimate first (about 4 bytes a token): a prompt well under a window fits and
one far over it does not, with no counting. Only near a window is the prompt counted
exactly, with litellm's counter, in a thread; that imports litellm on first use, so
it happens only for prompts that are actually close to a limit. Without litellm (the
`translate` extra), the estimate stands.
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


class PromptSize:
    """One request's prompt size, estimated at once and counted at most once."""

    def __init__(self, body: bytes, messages: Any) -> None:
        self.estimate = len(body) // _BYTES_PER_TOKEN
        self._messages = messages
        self._exact: int | None = None

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
            if self.estimate >= window * _SURE_TOO_BIG or await self.exact(route) > window:
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
