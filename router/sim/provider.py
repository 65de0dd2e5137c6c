"""`SimProvider`: the facade tests and tools use to run and script a simulated provider."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from aiohttp import web

from router.sim.faults import Fault
from router.sim.server import build_app
from router.sim.state import DEFAULT_MODELS, Clock, KeyStats, RecordedRequest, SimKey, SimState

# A stopping sim should not wait long for in-flight answers: hangs and stalls end on
# shutdown by themselves, and anything slower is a test that already lost its client.
_SHUTDOWN_TIMEOUT = 1.0


class SimProvider:
    """A simulated provider serving one or more keys in several wire formats on one port.

    OpenAI chat/embeddings/responses live under `serve()`'s `/v1` URL; Anthropic
    (`/v1/messages`), Azure (`/openai/deployments/...`) and Gemini (`/v1beta/models/...`)
    hang off `root`. Keys, buckets, fault scripts, stats and recorded requests are shared.

    The token buckets read time only through `clock` (seconds as a float), so a test can
    pass a fake clock and step it instead of sleeping.
    """

    def __init__(
        self,
        keys: Sequence[SimKey],
        *,
        clock: Clock = time.monotonic,
        models: Iterable[str] = DEFAULT_MODELS,
    ) -> None:
        self._state = SimState(keys, clock, models)
        self._root: str | None = None

    @property
    def keys(self) -> dict[str, SimKey]:
        return self._state.keys

    @property
    def root(self) -> str:
        """`http://HOST:PORT` while `serve()` runs: the base URL for the Anthropic SDK
        (`base_url=`) and Azure (`azure_endpoint=`), and for Gemini's `/v1beta` paths."""
        if self._root is None:
            raise RuntimeError("SimProvider.root is only known while serve() is running")
        return self._root

    @property
    def stats(self) -> dict[str, KeyStats]:
        return self._state.stats

    @property
    def requests(self) -> deque[RecordedRequest]:
        return self._state.requests

    def set_clock(self, clock: Clock) -> None:
        """Swap the clock; bucket levels carry over and refill from the new clock's now."""
        self._state.set_clock(clock)

    def inject(self, key: str, *faults: Fault, times: int = 1) -> None:
        """Queue `faults` for `key`: one per request, in order, `times` rounds (-1: forever)."""
        self._state.inject(key, faults, times)

    def clear(self, key: str | None = None) -> None:
        """Drop queued faults for `key`, or for every key."""
        self._state.clear(key)

    def pending(self, key: str) -> int:
        """Faults still queued for `key` (a forever round counts one pass)."""
        self._state.key(key)
        return len(self._state.queues[key])

    def app(self) -> web.Application:
        """A new aiohttp app over this provider's state.

        Run it with `handler_cancellation=True` (as `serve()` does) so a hung or stalled
        answer is cancelled as soon as its client leaves.
        """
        return build_app(self._state)

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on `host:port` (0 picks a free port) and yield the base URL ending in /v1.

        While serving, `root` is the same URL without `/v1`.
        """
        runner = web.AppRunner(
            self.app(),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            self._root = f"http://{_url_host(bound_host)}:{bound_port}"
            yield f"{self._root}/v1"
        finally:
            self._root = None
            await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
