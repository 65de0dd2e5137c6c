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

from multidict import CIMultiDict, CIMultiDictProxy

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

_NEVER = float("inf")
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())

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
        "content-type",  # the router's own: the body it sends is always JSON
    }
)


def forwardable_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that may go upstream (SDK hints such as `openai-beta`), by
    lowercase name, each name once.

    Hop-by-hop headers stay on the client's connection: the fixed ones, and any that
    its `Connection` header nominates (RFC 9110 §7.6.1); and Content-Type, which the
    router sets. Names are lowercased, as on HTTP/2, so that a key's headers and the
    provider's (`anthropic-version`) replace the client's instead of going next to
    them: a field such as anthropic-version sent twice, in two spellings, is one a
    strict server refuses. A name the client sent more than once goes once: a list
    field (`anthropic-beta`) with its values joined by ", " (RFC 9110 §5.3), any other
    with its last value (`anthropic-version` twice is one version, not two).
    A client sends the same header names on every request, so which of them go, and
    under what name, is kept per list of names (and `Connection` value): a request
    pays for one lookup, not a test per header.
    """
    items = tuple(client_headers.items())
    # Not keys(): multidict's view lists a name once however many times it was sent.
    shape = (tuple(map(_name, items)), client_headers.get("connection"))
    kept = _kept_by_shape.get(shape)
    if kept is None:
        kept = _kept(*shape)
        # Not kept when its names (or Connection) are long: a client varying them would
        # fill it.
        if sum(map(len, shape[0])) + len(shape[1] or "") <= _MAX_SHAPE_NAME_BYTES:
            if len(_kept_by_shape) >= _MAX_HEADER_SHAPES:
                _kept_by_shape.clear()  # many clients, or one varying its headers: start over
            _kept_by_shape[shape] = kept
    names, mask, repeated = kept
    values = compress(map(_value, items), mask)
    if not repeated:
        return dict(zip(names, values, strict=True))
    joined: dict[str, str] = {}
    for name, value in zip(names, values, strict=True):
        if name in joined and name in _LISTS:
            value = f"{joined[name]}, {value}"
        joined[name] = value
    return joined


_MAX_HEADER_SHAPES = 256
_MAX_SHAPE_NAME_BYTES = 4096  # an SDK's names add up to a few hundred bytes
# Fields whose value is a comma-separated list (RFC 9110 §5.3): sent twice, they are
# one list. Any other field sent twice takes its last value, as a dict of the two would.
_LISTS = frozenset({"anthropic-beta", "accept", "accept-language", "baggage", "tracestate"})
_name = itemgetter(0)
_value = itemgetter(1)
# Per list of names: the lowercase names that go, which of the client's fields they
# are, and whether a name comes more than once.
_Kept = tuple[tuple[str, ...], tuple[bool, ...], bool]
_kept_by_shape: dict[tuple[tuple[str, ...], str | None], _Kept] = {}


def _kept(names: tuple[str, ...], nominated: str | None) -> _Kept:
    dropped = _DROPPED_REQUEST_HEADERS
    if nominated:
        dropped = dropped | {name.strip().lower() for name in nominated.split(",")}
    lowered = tuple(name.lower() for name in names)
    mask = tuple(name not in dropped and not name.startswith("x-router-") for name in lowered)
    sent = tuple(compress(lowered, mask))
    return sent, mask, len(set(sent)) != len(sent)


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
    """One attempt at a provider: its response, read through here once the head is in.

    Each attempt has one lazy deadline, from the request's send to the body's end,
    instead of one for the head and one per read (measured: an `asyncio.timeout` per
    read was the largest per-chunk cost of a stream, and each uvloop timer is a libuv
    handle of its own, about 5,000 instructions to make and close). A wait only moves
    the due time; the deadline, when it fires, is set again for that time or, if the
    wait is still on past it, ends the wait: a late head cancels the sending task
    (`head_late` tells `Upstream.send` the cancellation was its own), a late body
    read fails with `UpstreamTimeout` (aiohttp's own sock_read timeout works the same
    way). The first firing is at most `idle` seconds after the send, so the reads that
    follow a prompt head (each due `idle` or more after it) keep the same timer.
    """

    __slots__ = (
        "_cap",
        "_deadlines",
        "_due",
        "_ends",
        "_idle",
        "_loop",
        "_phase",
        "_response",
        "_seen",
        "_task",
        "_timer",
        "_when",
        "head_late",
        "headers",
        "route_id",
        "status",
    )

    def __init__(self, route_id: str, deadlines: Deadlines, task: asyncio.Task[object]) -> None:
        self._response: Response | None = None  # until the head is in
        self._loop = deadlines.loop  # kept there: get_running_loop() is a getpid() syscall
        self._deadlines = deadlines
        self._task = task  # cancelled when the head is late
        self._timer: Deadline | None = None
        self._when = 0.0  # when the pending deadline fires
        self._due = 0.0  # when the waiting read times out; 0: no read is waiting
        self._ends = _NEVER  # when a stream's last read times out (limit_stream)
        self._phase = "first_byte"
        # `_idle`, `_cap` and `_seen` (a whole read's seconds without a byte, its end at
        # the latest, the bytes seen) are set by read(), and read only in its phase.
        self.head_late = False
        self.route_id = route_id
        self.status = 0
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS

    def wait_head(self, timeout: float, idle: float) -> None:
        """The head is due within `timeout`; the timer first fires `idle` after now at
        the latest, for the body's reads to keep it."""
        now = self._loop.time()
        # Conditionals, not min()/max(): a builtin call costs ten times the comparison.
        self._due = due = now + timeout if timeout > 0.0 else now
        first = now + idle if idle > 0.0 else now
        self._when = first if first < due else due
        self._timer = self._deadlines.at(self._when, self._expire)

    def got_head(self, response: Response) -> None:
        self._response = response
        self._due = 0.0
        # Plain attributes, read several times per attempt (a property is a call each time).
        self.status = response.status
        self.headers = response.headers

    # The try blocks below map errors inline rather than through a shared context
    # manager: next_chunk runs once per stream chunk, and a context manager there is a
    # measurable cost (bench/cpu.py).

    async def read(self, timeout: float, total: float | None = None) -> bytes:
        """The whole body: no more than `timeout` seconds without a byte of it, and
        `total` seconds in all (None: `timeout`). A large answer on a slow link, or a
        gateway that sends its head at once and the body later, a little at a time,
        is not cut while it makes progress."""
        assert self._response is not None
        self._idle = timeout
        self._cap = self._loop.time() + (total if total is not None else timeout)
        self._seen = self._response.held
        self._arm(timeout, "read")
        try:
            return await self._response.read()
        except UpstreamError:
            raise
        except Exception as exc:
            if (mapped := _mapped(exc, self.route_id, "read")) is None:
                raise
            try:
                raise mapped from exc
            finally:
                del mapped  # a local naming it is a cycle with its traceback (the Call)
        finally:
            self._due = 0.0

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        """The next piece of the body as it arrives, within `timeout`; b"" at the end."""
        response = self._response
        assert response is not None
        # _arm(), inline: this runs for every piece of every stream.
        now = self._loop.time()
        self._due = due = now + (timeout if timeout > 0.0 else 0.0)
        if due > self._ends:
            if now >= self._ends:
                # Past already: a read that finds bytes waiting never waits for its timer
                # (a client slow to read, an upstream quick to send).
                self._due = 0.0
                raise UpstreamTimeout(self.route_id, "stream")
            self._due = due = self._ends
            phase = "stream"
        self._phase = phase
        if self._timer is None or self._when > due:
            self._set_timer(due)
        try:
            return await response.readany()
        except UpstreamError:
            raise
        except Exception as exc:
            if (mapped := _mapped(exc, self.route_id, phase)) is None:
                raise
            try:
                raise mapped from exc
            finally:
                del mapped  # a local naming it is a cycle with its traceback (the Call)
        finally:
            self._due = 0.0

    def limit_stream(self, seconds: float) -> None:
        """The stream ends within `seconds` from now (timeouts.stream): a read still
        waiting then fails with a `stream` timeout, whatever its own timeout."""
        self._ends = self._loop.time() + seconds

    def ended(self) -> bool:
        """Whether the whole body is in and has been read: next_chunk() would say b""."""
        assert self._response is not None
        return self._response.at_eof()

    def _arm(self, timeout: float, phase: str) -> None:
        self._due = due = self._loop.time() + (timeout if timeout > 0.0 else 0.0)
        self._phase = phase
        if self._timer is None or self._when > due:
            self._set_timer(due)

    def _set_timer(self, due: float) -> None:
        """The deadline at `due`, sooner than the pending one (or the first)."""
        if self._timer is not None:
            self._timer.cancel()
        self._when = due
        self._timer = self._deadlines.at(due, self._expire)

    def _expire(self) -> None:
        self._timer = None
        due = self._due
        if not due:
            return  # no wait on: the next one sets the deadline again
        if self._loop.time() < due:
            self._when = due
            self._timer = self._deadlines.at(due, self._expire)
            return
        if self._response is None:
            self.head_late = True
            self._task.cancel()
            return
        if self._phase == "read" and self._response.held > self._seen:
            # Bytes came since: another `idle` from now, within the read's end.
            self._seen = self._response.held
            now = self._loop.time()
            due = now + self._idle
            if due > self._cap:
                due = self._cap
            if due > now:
                self._due = self._when = due
                self._timer = self._deadlines.at(due, self._expire)
                return
        self._response.set_exception(UpstreamTimeout(self.route_id, self._phase))

    def stop(self) -> None:
        """Cancel the deadline (the attempt failed before its head, or is over)."""
        self._due = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def finish(self) -> None:
        """Give the connection back to the pool when the body was read to the end, and
        close it otherwise: a stream the client left must reach the provider as cancelled."""
        self.stop()
        if self._response is not None:
            self._response.release()  # pooled only when read to the end, closed otherwise


class Upstream:
    def __init__(
        self, client: HttpClient, timeouts: Timeouts, deadlines: Deadlines | None = None
    ) -> None:
        self._client = client
        self._timeouts = timeouts
        # Two per attempt (UpstreamResponse). Given: the process's, which every config
        # shares, so a reload leaves nothing behind that lives until exit.
        self._deadlines = deadlines if deadlines is not None else Deadlines()

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
        timeouts = route.timeouts or self._timeouts
        attempt = UpstreamResponse(route.id, self._deadlines, task)
        attempt.wait_head(head_timeout, timeouts.idle)
        try:
            response = await self._client.post(
                url, body, headers, connect_timeout=timeouts.connect, proxy=route.key.proxy
            )
        except asyncio.CancelledError:
            attempt.stop()
            # Ours, unless the task was also cancelled from outside (asyncio.timeout's rule).
            if attempt.head_late and task.uncancel() <= cancelling:
                raise UpstreamTimeout(route.id, "first_byte") from None
            raise
        except Exception as exc:
            attempt.stop()
            if (mapped := _mapped(exc, route.id, "first_byte")) is None:
                raise
            try:
                raise mapped from exc
            finally:
                del mapped  # a local naming it is a cycle with its traceback (the Call)
        except BaseException:
            attempt.stop()
            raise
        attempt.got_head(response)
        return attempt

    def close(self) -> None:
        self._deadlines.close()


__all__ = [
    "Upstream",
    "UpstreamError",
    "UpstreamResponse",
    "forwardable_headers",
]
