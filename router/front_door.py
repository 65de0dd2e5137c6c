"""The server side of client connections: how many may be open at once, and what the
drain does with them (client_connection.py times each one's reads).

At the cap a new connection first displaces, of those not serving a request (idle
keep-alive, or a head still arriving), the one that opened or last received a request
longest ago (as nginx reuses its idle keep-alive connections when it runs short), so
idle sockets cannot starve real requests. Only when every open connection is serving a
request is the new one refused: a 503 with `Connection: close` written at once and the
socket closed (nothing of its request has been read, so the answer cannot depend on it).

`FrontDoor` reaches into two attributes of aiohttp's `Server` (`_kwargs`, `_loop`) and
one of `RequestHandler` (`_current_request`, for the drain); tests through real sockets
(tests/integration/test_front_door.py) notice if a new aiohttp moves them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.client_connection import ClientTimeouts, Connection
from router.fast_paths import FastPaths

log = structlog.get_logger("router.front_door")

_REFUSAL_BODY = json.dumps(
    {
        "error": {
            "message": "the router has too many open connections; retry shortly",
            "type": "service_unavailable",
            "param": None,
            "code": "too_many_connections",
        }
    }
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)
# At most one `connections_refused` warning per this many seconds, with the count since.
_REFUSAL_LOG_EVERY = 10.0


class FrontDoor(web.Server):
    """aiohttp's server with `Connection`s and a cap on how many are open."""

    def __init__(
        self,
        stock: web.Server,
        *,
        reading: ClientTimeouts,
        max_head: int,
        max_connections: int,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None,
    ) -> None:
        super().__init__(
            handler or stock.request_handler,
            request_factory=stock.request_factory,
            handler_cancellation=stock.handler_cancellation,
            loop=stock._loop,
            **stock._kwargs,
        )
        self._reading = reading
        self._max_head = max_head
        self.max_connections = max_connections
        self._open: dict[RequestHandler, None] = {}  # by when opened or last used, oldest first
        self._refused_unlogged = 0  # connections turned away since the last warning
        self._refusal_logged_at = float("-inf")

    def __call__(self) -> Connection:
        return Connection(
            self, loop=self._loop, reading=self._reading, max_head=self._max_head, **self._kwargs
        )

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._open) >= self.max_connections and not self._displace_one():
            self._refuse(handler, transport)
            return
        self._open[handler] = None

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)
        super().connection_lost(handler, exc)

    def pre_shutdown(self) -> None:
        """The drain's turn, once the listener has closed: a connection serving a
        request closes after its answer (aiohttp's `close()`); any other, idle or with a
        head part way in, closes now. aiohttp's `close()` alone would leave those open
        and no longer reading, so that a client's next request on one waited, unanswered,
        for the end of the drain instead of going to a new connection (another replica)
        at once, as nginx closes its idle keep-alive connections when it shuts down."""
        for handler in list(self._connections):
            if isinstance(handler, Connection) and not handler.serving:
                handler.force_close()
            else:
                handler.close()

    def in_flight(self) -> list[web.BaseRequest]:
        """The requests whose handlers are running now (for the drain at shutdown)."""
        requests = (handler._current_request for handler in self._open)
        return [request for request in requests if request is not None]

    def used(self, handler: RequestHandler) -> None:
        """`handler` received a request: the last to be displaced now."""
        if self._open.pop(handler, False) is None:
            self._open[handler] = None

    def _displace_one(self) -> bool:
        """Close the connection serving no request that opened or last received one
        longest ago; False if all are serving."""
        for handler in self._open:
            if not (isinstance(handler, Connection) and handler.serving):
                del self._open[handler]
                handler.force_close()
                return True
        return False

    def _refuse(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._refused_unlogged += 1
        transport.write(REFUSAL)
        handler.force_close()  # the transport sends what it holds, then closes
        now = self._loop.time()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_EVERY:
            log.warning(
                "connections_refused",
                count=self._refused_unlogged,
                max_connections=self.max_connections,
                detail="every open client connection is serving a request; "
                "raise server.max_connections if this is expected load",
            )
            self._refusal_logged_at = now
            self._refused_unlogged = 0


class Runner(web.AppRunner):
    """`web.AppRunner` whose server is a `FrontDoor`."""

    def __init__(
        self,
        app: web.Application,
        *,
        reading: ClientTimeouts,
        max_head: int,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._reading = reading
        self._max_head = max_head
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        stock = await super()._make_server()
        return FrontDoor(
            stock,
            reading=self._reading,
            max_head=self._max_head,
            max_connections=self._max_connections,
            handler=FastPaths(self.app, stock.request_handler),
        )


def connection_cap(configured: int) -> int:
    """`configured`, or less if the open-files limit cannot hold that many client
    connections with an upstream socket each and some room for everything else."""
    try:
        import resource
    except ImportError:  # not POSIX
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (soft - 64) // 2))
