"""A connection to one of a host name's several addresses, raced as RFC 8305 says (Happy
Eyeballs, as aiohttp, curl and the providers' SDKs do).

The addresses go in turn, IPv6 and IPv4 interleaved, the next one started when the one
before has not connected within 250 ms, and the first to connect is taken (aiohappyeyeballs,
aiohttp's own implementation). One after the other, an address that drops packets (an
IPv6 route that goes nowhere, a firewalled host) took the whole connect timeout of every
new connection, and the route failed although the next address answered.

A TLS handshake that fails on the winner, for any reason but its certificate, has the
other addresses race again, as they were tried in turn before. When every address
fails, the last attempt's error is raised as it is (its errno says whose fault it is:
EADDRNOTAVAIL is the router's own ports running out), not a summary of them all.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any, TypeVar

import aiohappyeyeballs

# RFC 8305's Connection Attempt Delay: how long an address has to connect before the next
# one is tried alongside it (aiohttp's too; curl waits 200 ms).
HAPPY_EYEBALLS_DELAY = 0.25

Info = aiohappyeyeballs.AddrInfoType
_P = TypeVar("_P", bound=asyncio.BaseProtocol)


async def connect_first(
    factory: Callable[[], _P],
    addresses: list[tuple[int, tuple[str, int]]],
    *,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, _P]:
    """`loop.create_connection(factory, ...)` on the first of `addresses` (family, socket
    address) to connect."""
    loop = asyncio.get_running_loop()
    infos = _infos(addresses)
    while True:
        sock, won = await _race(loop, infos)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await loop.create_connection(  # type: ignore[return-value]
                factory, sock=sock, ssl=ssl, server_hostname=server_hostname
            )
        except BaseException as exc:
            sock.close()  # also when cancelled (the connect timeout) in the handshake
            # The name's certificate: no other address of the name fixes it.
            certificate = isinstance(exc, ssl_module.SSLCertVerificationError)
            if not isinstance(exc, OSError) or certificate or len(infos) == 1:
                raise
            infos.remove(won)


async def connected_socket(addresses: list[tuple[int, tuple[str, int]]]) -> socket.socket:
    """A TCP socket connected to the first of `addresses` to answer, for a client that
    builds its own transport on it (redis-py's: health/redis_connection.py)."""
    sock, _ = await _race(asyncio.get_running_loop(), _infos(addresses))
    return sock


def _infos(addresses: list[tuple[int, tuple[str, int]]]) -> list[Info]:
    return [
        (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)
        for family, sockaddr in addresses
    ]


async def _race(loop: asyncio.AbstractEventLoop, infos: list[Info]) -> tuple[socket.socket, Info]:
    """The winning socket, connected, and the address it was made for."""
    attempts = _Attempts(loop)
    try:
        sock = await aiohappyeyeballs.start_connection(
            infos,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            interleave=1,
            loop=attempts,  # type: ignore[arg-type]
            socket_factory=attempts.new_socket,
        )
    except (OSError, RuntimeError) as exc:
        raise attempts.last_error(exc) from None
    return sock, attempts.made_for(sock)


class _Attempts:
    """The running loop as start_connection uses it, with each attempt's socket and error
    kept: it names no address with the socket it returns, and when the errors differ it
    raises an OSError that only lists them (no errno); uvloop may raise RuntimeError
    where asyncio raises OSError."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._made: list[tuple[socket.socket, Info]] = []
        self._errors: list[BaseException] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    def new_socket(self, info: Info) -> socket.socket:
        try:
            sock = socket.socket(info[0], info[1], info[2])
        except OSError as exc:  # EMFILE: the router's own descriptors
            self._errors.append(exc)
            raise
        self._made.append((sock, info))
        return sock

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        try:
            await self._loop.sock_connect(sock, address)
        except (OSError, RuntimeError) as exc:
            self._errors.append(exc)
            raise

    def made_for(self, sock: socket.socket) -> Info:
        return next(info for made, info in self._made if made is sock)

    def last_error(self, raised: BaseException) -> OSError:
        error = self._errors[-1] if self._errors else raised
        if isinstance(error, OSError):
            return error
        return OSError(f"{type(error).__name__}: {error}")
