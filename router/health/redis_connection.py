"""redis-py's TCP and TLS connections, their host name looked up by the router's resolver.

redis-py connects with `asyncio.open_connection(host, port)`, which looks the name up on
the pool every lookup in the process shares (the loop's default executor; uvloop:
libuv's four threads), and the connect timeout that gives up on a lookup does not end
it. A Redis host that does not resolve, or a DNS server that hangs, then had every
reconnect (writer, subscriber and reader, each backoff) hold a thread for the system
resolver's timeout: the pool filled, litellm's requests (translated routes) waited
behind it past their first-byte deadline, and the exit waited about a minute for the
threads. Here the name goes to the opener the store is given (server.py passes
upstream/resolver.py's: one lookup per name at a time, on a daemon thread of its own),
which returns a socket connected to one of its addresses, and redis-py builds its
connection on that socket.

The hook: `Connection._connect()` opens the connection with
`asyncio.open_connection(**self._connection_arguments())`, the same from redis-py 5.0.1
(the floor, .ci/oldest.txt) to 8.x. The override gives it `sock=` for host and port, and
for TLS the host name as `server_hostname`, so the certificate is checked against the
name, not the address connected to (as open_connection does given the name). A redis-py
whose arguments are not the expected ones, or whose `_connect` does not ask for them,
connects as it always did. Unix sockets are left to redis-py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio.connection import Connection, SSLConnection

# (host, port) -> a socket connected to it; socket.gaierror when the name does not resolve.
SocketOpener = Callable[[str, int], Awaitable[socket.socket]]

# What `_connection_arguments()` returns in every redis-py the override was read against.
_EXPECTED = frozenset({"host", "port", "ssl"})
_HOOKED = all(
    callable(getattr(Connection, name, None)) for name in ("_connect", "_connection_arguments")
)


class _Resolving:
    """The override, for Connection and SSLConnection alike."""

    host: str
    port: int
    socket_connect_timeout: float | None

    def __init__(self, *, open_socket: SocketOpener, **kwargs: Any) -> None:
        self._open_socket = open_socket
        self._opened: socket.socket | None = None  # until `_connection_arguments` takes it
        super().__init__(**kwargs)

    async def _connect(self) -> None:
        if not self._arguments_as_expected():
            await super()._connect()  # type: ignore[misc]
            return
        # Under the connect timeout, as redis-py's own lookup and connect are: a failure
        # is its ConnectionError or TimeoutError, and the store degraded, as before.
        async with asyncio.timeout(self.socket_connect_timeout):
            sock = self._opened = await self._open_socket(self.host, self.port)
        try:
            await super()._connect()  # type: ignore[misc]
        except BaseException:
            sock.close()  # also when cancelled (the connect timeout) in a TLS handshake
            raise
        finally:
            if self._opened is not None:  # not asked for: connected as redis-py does
                self._opened = None
                sock.close()

    def _connection_arguments(self) -> Mapping[str, Any]:
        arguments = dict(super()._connection_arguments())  # type: ignore[misc]
        sock, self._opened = self._opened, None
        if sock is None:
            return arguments
        del arguments["host"], arguments["port"]
        arguments["sock"] = sock
        if arguments.get("ssl") is not None:
            arguments["server_hostname"] = self.host
        return arguments

    def _arguments_as_expected(self) -> bool:
        arguments = super()._connection_arguments()  # type: ignore[misc]
        return (
            set(arguments) <= _EXPECTED
            and arguments.get("host") == self.host
            and arguments.get("port") == self.port
        )


class ResolvedConnection(_Resolving, Connection):
    """A TCP connection to Redis whose host the router's resolver looked up."""


class ResolvedSSLConnection(_Resolving, SSLConnection):
    """A TLS connection to Redis whose host the router's resolver looked up, its
    certificate checked against the host name."""


def resolving(options: dict[str, Any], open_socket: SocketOpener | None) -> dict[str, Any]:
    """The ConnectionPool `options` (parse_url's) with connections that look their host up
    through `open_socket`; as they are for a unix socket, a connection class of the
    URL's own, no opener, or a redis-py without the hook."""
    stock = options.get("connection_class", Connection)
    resolved = {Connection: ResolvedConnection, SSLConnection: ResolvedSSLConnection}.get(stock)
    if open_socket is None or resolved is None or not _HOOKED:
        return options
    return {**options, "connection_class": resolved, "open_socket": open_socket}
