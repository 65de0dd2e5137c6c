"""What a translator hands back: the same surface as `router.upstream.UpstreamResponse`.

`status`, `headers`, `route_id`, `read(timeout)`, `next_chunk(timeout, phase)` (b"" at
the end) and `finish()`, so failover, the classifier, the stream relay and the metrics
treat a translated answer like a native one. `TranslatedAnswer` is a complete body (a success, or
the provider's error); `EventStream` yields the client's SSE events as litellm produces
them and maps any failure to the router's `UpstreamError`s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from router.errors import UpstreamError, UpstreamTimeout

# Headers that describe the provider's bytes, not ours: the body was decoded and
# re-encoded on the way through, so its length, encoding and framing are new.
_NOT_CARRIED = frozenset(
    {
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
    }
)

# `finish()` is synchronous (as `UpstreamResponse.finish` is) but closing a litellm stream
# is not; the closing tasks are kept here until done so none is garbage-collected midway.
_closing: set[asyncio.Task[None]] = set()


def json_bytes(value: Any) -> bytes:
    """Compact JSON, as the providers write it: fewer bytes per chunk."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    """Pydantic objects litellm leaves inside its dicts (usage, tool input)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(exclude_none=True)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def carried_headers(
    provider_headers: Mapping[str, str], content_type: str
) -> CIMultiDictProxy[str]:
    """The provider's headers (rate limits, retry hints, request ids) over our body."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in provider_headers.items():
        if name.lower() not in _NOT_CARRIED:
            headers.add(name, value)
    headers["content-type"] = content_type
    return CIMultiDictProxy(headers)


class TranslatedAnswer:
    """A complete answer: the translated success, or the provider's error as it sent it."""

    __slots__ = ("_body", "_sent", "headers", "route_id", "status")

    def __init__(
        self, route_id: str, status: int, headers: CIMultiDictProxy[str], body: bytes
    ) -> None:
        self.route_id = route_id
        self.status = status
        self.headers = headers
        self._body = body
        self._sent = False

    async def read(self, timeout: float, total: float | None = None) -> bytes:
        return self._body

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        if self._sent:
            return b""
        self._sent = True
        return self._body

    def limit_stream(self, seconds: float) -> None:
        pass  # whole already

    def ended(self) -> bool:
        return self._sent

    def finish(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


StreamFailure = Callable[[BaseException, str], UpstreamError]


class EventStream:
    """A 200 stream of the client's SSE events, produced by `events` as litellm yields.

    `fail` turns whatever the pipeline raises into the router's error for the phase it
    happened in (a timeout stays a timeout; anything else broke the stream).
    `close` closes litellm's stream, and with it the provider's connection.
    """

    __slots__ = ("_close", "_closed", "_ends", "_events", "_fail", "_loop", "headers", "route_id")

    status = 200

    def __init__(
        self,
        route_id: str,
        headers: CIMultiDictProxy[str],
        events: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        fail: StreamFailure,
    ) -> None:
        self.route_id = route_id
        self.headers = headers
        self._events = events
        self._close = close
        self._fail = fail
        self._closed = False
        self._ends: float | None = None  # loop time the stream must end by (limit_stream)
        self._loop: asyncio.AbstractEventLoop | None = None

    def limit_stream(self, seconds: float) -> None:
        """As UpstreamResponse's: a read `seconds` from now or later fails with a
        `stream` timeout."""
        self._loop = asyncio.get_running_loop()
        self._ends = self._loop.time() + seconds

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        if self._closed:
            return b""
        if self._ends is not None and self._loop is not None:
            left = self._ends - self._loop.time()
            if left <= 0.0:  # a read that needs no wait would not meet the timeout
                raise UpstreamTimeout(self.route_id, "stream")
            if left < timeout:
                timeout, phase = left, "stream"
        try:
            async with asyncio.timeout(timeout):
                return await anext(self._events)
        except StopAsyncIteration:
            return b""
        except UpstreamError:
            raise
        except Exception as exc:  # the boundary for litellm's errors, as upstream/ is its client's
            raise self._fail(exc, phase) from exc

    def ended(self) -> bool:
        return False  # known only once next_chunk() says so

    async def read(self, timeout: float, total: float | None = None) -> bytes:
        """The whole stream, for a caller that asked for a stream but reads it at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (total if total is not None else timeout)
        parts = []
        while chunk := await self.next_chunk(max(deadline - loop.time(), 0.0), "read"):
            parts.append(chunk)
        return b"".join(parts)

    def finish(self) -> None:
        """Close litellm's stream: a client that left must reach the provider as cancelled."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
        except RuntimeError:
            pass  # still running a read (finish() raced it): litellm's stream closes below
        finally:
            await self._close()
