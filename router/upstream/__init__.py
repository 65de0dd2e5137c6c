"""Talking to providers: one HttpClient, and the only place its errors are caught.

Every client and socket exception is mapped here to the router's own `UpstreamError`
classes (httpx `_transports/default.py` does the same at its boundary), so the rest of
the code deals in one closed set of failures.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Mapping
from itertools import compress
from operator import itemgetter

from multidict import CIMultiDictProxy

from router.errors import (
    LocalResourceError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from router.types import Route, Timeouts
from router.upstream.client import (
    BadResponse,
    BrokenBody,
    Disconnected,
    HttpClient,
    InvalidHeader,
    ProxyRefused,
    Response,
)
from router.upstream.deadlines import Deadline, Deadlines

# Never forwarded: the client's own credentials (the route's key replaces them),
# hop-by-hop headers, and what the client computes itself for the new request.
_DROPPED_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
        "host",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",
        "expect",
    }
)


def forwardable_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that may go upstream (SDK hints such as `openai-beta`).

    Hop-by-hop headers stay on the client's connection: the fixed ones, and any that
    its `Connection` header nominates (RFC 9110 §7.6.1). A client sends the same header
    names on every request, so which of them go is kept per list of names (and
    `Connection` value): a request pays for one lookup, not a test per header.
    """
    items = tuple(client_headers.items())
    # Not keys(): multidict's view lists a name once however many times it was sent.
    shape = (tuple(map(_name, items)), client_headers.get("connection"))
    kept = _kept_by_shape.get(shape)
    if kept is None:
        kept = _kept(*shape)
        if len(_kept_by_shape) >= _MAX_HEADER_SHAPES:
            _kept_by_shape.clear()  # many clients, or one varying its headers: start over
        _kept_by_shape[shape] = kept
    return dict(compress(items, kept))


_MAX_HEADER_SHAPES = 256
_name = itemgetter(0)
_kept_by_shape: dict[tuple[tuple[str, ...], str | None], tuple[bool, ...]] = {}


def _kept(names: tuple[str, ...], nominated: str | None) -> tuple[bool, ...]:
    dropped = _DROPPED_REQUEST_HEADERS
    if nominated:
        dropped = dropped | {name.strip().lower() for name in nominated.split(",")}
    return tuple(
        (lowered := name.lower()) not in dropped and not lowered.startswith("x-router-")
        for name in names
    )


# The router's own limits, not the upstream's fault: out of file descriptors (process,
# system), socket buffers, ephemeral ports, memory.
_LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL, errno.ENOMEM}
)


def _mapped(exc: Exception, route_id: str, phase: str) -> UpstreamError | None:
    """The router's own error for a client (or socket) failure; None for any other."""
    if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return LocalResourceError(
            route_id, f"the router is out of a local resource ({name}: {os.strerror(exc.errno)})"
        )
    if isinstance(exc, TimeoutError):  # the connect timeout; reads time out as UpstreamTimeout
        return UpstreamTimeout(route_id, phase)
    if isinstance(exc, BrokenBody):
        return UpstreamProtocolError(route_id, f"broken response body: {exc}")
    if isinstance(exc, BadResponse):
        return UpstreamProtocolError(route_id, f"bad response: {exc}")
    if isinstance(exc, InvalidHeader):
        return UpstreamProtocolError(route_id, f"request not sent: {exc}")
    if isinstance(exc, Disconnected | ProxyRefused | OSError):
        return UpstreamConnectionError(route_id, f"{type(exc).__name__}: {exc}")
    return None


class UpstreamResponse:
    """A provider's response whose head has arrived; the body is read through here.

    Body reads are bounded by one lazy deadline per response instead of an
    `asyncio.timeout` per read (measured: the context manager was the largest
    per-chunk cost of a stream). Each read only moves the due time; the deadline, when
    it fires, is set again for that time or, if a read is still waiting past it, fails
    the body with `UpstreamTimeout` (aiohttp's own sock_read timeout works the same way).
    """

    __slots__ = (
        "_deadlines",
        "_due",
        "_loop",
        "_phase",
        "_response",
        "_timer",
        "_when",
        "headers",
        "route_id",
        "status",
    )

    def __init__(self, response: Response, route_id: str, deadlines: Deadlines) -> None:
        self._response = response
        # The head is in: plain attributes, read several times per attempt (a property
        # is a call each time).
        self.status: int = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self._loop = deadlines.loop  # kept there: get_running_loop() is a getpid() syscall
        self._deadlines = deadlines
        self._timer: Deadline | None = None
        self._when = 0.0  # when the pending deadline fires
        self._due = 0.0  # when the waiting read times out; 0: no read is waiting
        self._phase = "read"
        self.route_id = route_id

    # The try blocks below map errors inline rather than through a shared context
    # manager: next_chunk runs once per stream chunk, and a context manager there is a
    # measurable cost (bench/cpu.py).

    async def read(self, timeout: float) -> bytes:
        """The whole body, within `timeout` seconds."""
        self._arm(timeout, "read")
        try:
            return await self._response.read()
        except UpstreamError:
            raise
        except Exception as exc:
            if (mapped := _mapped(exc, self.route_id, "read")) is None:
                raise
            raise mapped from exc
        finally:
            self._due = 0.0

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        """The next piece of the body as it arrives, within `timeout`; b"" at the end."""
        self._arm(timeout, phase)
        try:
            return await self._response.readany()
        except UpstreamError:
            raise
        except Exception as exc:
            if (mapped := _mapped(exc, self.route_id, phase)) is None:
                raise
            raise mapped from exc
        finally:
            self._due = 0.0

    def ended(self) -> bool:
        """Whether the whole body is in and has been read: next_chunk() would say b""."""
        return self._response.at_eof()

    def _arm(self, timeout: float, phase: str) -> None:
        self._due = due = self._loop.time() + max(timeout, 0.0)
        self._phase = phase
        timer = self._timer
        if timer is None or self._when > due:
            if timer is not None:
                timer.cancel()
            self._when = due
            self._timer = self._deadlines.at(due, self._expire)

    def _expire(self) -> None:
        self._timer = None
        due = self._due
        if not due:
            return  # no read waiting: the next one sets the deadline again
        if self._loop.time() < due:
            self._when = due
            self._timer = self._deadlines.at(due, self._expire)
            return
        self._response.set_exception(UpstreamTimeout(self.route_id, self._phase))

    def finish(self) -> None:
        """Give the connection back to the pool when the body was read to the end, and
        close it otherwise: a stream the client left must reach the provider as cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._response.release()  # pooled only when read to the end, closed otherwise


class Upstream:
    def __init__(self, client: HttpClient, timeouts: Timeouts) -> None:
        self._client = client
        self._timeouts = timeouts
        self._deadlines = Deadlines()  # the head and body deadlines of every attempt

    async def send(
        self,
        route: Route,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        head_timeout: float,
    ) -> UpstreamResponse:
        """POST `body` to `url` for `route`; return once the response head is in.

        `headers` are complete (the provider's auth included). The caller must call
        `finish()` on the result, in a `finally`.
        """
        task = asyncio.current_task(self._deadlines.loop)  # given: no getpid() to find it
        assert task is not None
        cancelling = task.cancelling()
        deadline = self._deadlines.after(head_timeout, task.cancel)
        try:
            response = await self._client.post(
                url,
                body,
                headers,
                connect_timeout=(route.timeouts or self._timeouts).connect,
                proxy=route.key.proxy,
            )
        except asyncio.CancelledError:
            # Ours, unless the task was also cancelled from outside (asyncio.timeout's rule).
            if deadline.fired and task.uncancel() <= cancelling:
                raise UpstreamTimeout(route.id, "first_byte") from None
            raise
        except Exception as exc:
            if (mapped := _mapped(exc, route.id, "first_byte")) is None:
                raise
            raise mapped from exc
        finally:
            deadline.cancel()
        return UpstreamResponse(response, route.id, self._deadlines)

    def close(self) -> None:
        self._deadlines.close()


__all__ = [
    "Upstream",
    "UpstreamError",
    "UpstreamResponse",
    "forwardable_headers",
]
