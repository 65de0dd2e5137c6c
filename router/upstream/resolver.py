"""Host names to addresses for the upstream client, so that one slow name cannot hold up
the lookups of every other.

`loop.create_connection(host, ...)` resolves the name on a pool every lookup shares
(uvloop: libuv's four threads; asyncio: the loop's default executor), and the connect
timeout that gives up on a lookup does not end it: it keeps its thread until the system
resolver answers (seconds to tens of seconds). A provider whose name resolves slowly (a
DNS server timing out, a mistyped `api_base`) then took every thread with the requests
sent to it, and the healthy providers' new connections timed out behind them: their
routes were charged the timeouts and cooled down.

Here each name has at most one lookup in flight, however many requests wait for it (they
share its answer, and one that gives up does not end it for the others), on a thread of
its own. An answer is kept for `ttl` seconds (aiohttp's connector keeps its
own for 10 s). An answer out of date is used while the name is looked up again, and
when that lookup fails, for another `ttl` (an hour at most in all): a name whose DNS
has started to time out keeps its last addresses. A name the resolver says does not
exist keeps none. A literal address is never looked up.

A name with several addresses is connected to through race.py (RFC 8305).

The Redis state store looks its host up here too (its own Resolver; server.py): redis-py
would have looked it up on the shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from ssl import SSLContext
from typing import TypeVar

from router.upstream.keepalive import keep_alive
from router.upstream.race import connect_first, connected_socket

# (family, socket address) as getaddrinfo gives them, in its order.
Address = tuple[int, tuple[str, int]]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)

TTL_SECONDS = 30.0
# The longest an answer is served while lookups fail (RFC 8767 suggests one to three
# days; a provider's addresses can move within one).
MAX_STALE_SECONDS = 3600.0
# What a resolver says of a name that does not exist (or has no address): no stale
# answer for it.
_NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)
_MAX_NAMES = 1024  # names remembered; they come from the config, so far fewer in practice


class Resolver:
    def __init__(
        self,
        *,
        ttl: float = TTL_SECONDS,
        lookup: Callable[[str, int], list[Address]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._lookup = lookup or _getaddrinfo
        self._clock = clock
        # (until when it is fresh, the addresses, when they were looked up)
        self._answers: dict[tuple[str, int], tuple[float, list[Address], float]] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[list[Address]]] = {}

    async def addresses(self, host: str, port: int) -> list[Address]:
        """Where `host:port` is, as the system resolver says (socket.gaierror when it
        cannot say); a literal address as it is."""
        literal = _literal(host, port)
        if literal is not None:
            return literal
        name = (host, port)
        answer = self._answers.get(name)
        now = self._clock()
        if answer is not None and now - answer[2] <= MAX_STALE_SECONDS:
            if answer[0] <= now:
                # Out of date: looked up again meanwhile, and used until the new answer
                # is in (RFC 8767's serve-stale): a name whose DNS now times out would
                # otherwise cost every request its connect timeout, and the route its
                # breaker, while an answer that mostly still holds is at hand.
                self._pending_lookup(name)
            return answer[1]
        # Shielded: a request that gives up (its connect timeout) leaves the lookup to
        # the others waiting on it, and to the next request for the name.
        return await asyncio.shield(self._pending_lookup(name))

    def _pending_lookup(self, name: tuple[str, int]) -> asyncio.Future[list[Address]]:
        """The lookup of `name` in flight, started if there is none (or the one there is
        belongs to an event loop that has closed: a test's, an embedder's)."""
        pending = self._pending.get(name)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = self._pending[name] = self._look_up(*name)
            pending.add_done_callback(lambda done: self._settle(name, done))
        return pending

    async def connect(
        self,
        factory: Callable[[], _P],
        host: str,
        port: int,
        *,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.Transport, _P]:
        """`loop.create_connection` to `host:port`, its name looked up here; several
        addresses race (race.py). TLS is checked against `server_hostname`, or `host`.
        The connection gets TCP keepalive (keepalive.py)."""
        loop = asyncio.get_running_loop()
        addresses = await self.addresses(host, port)
        if ssl is not None and server_hostname is None:
            server_hostname = host.strip("[]")  # not the address it is connected to
        if len(addresses) == 1:
            _family, (address, number) = addresses[0]
            transport, protocol = await loop.create_connection(
                factory, address, number, ssl=ssl, server_hostname=server_hostname
            )
        else:
            transport, protocol = await connect_first(
                factory, addresses, ssl=ssl, server_hostname=server_hostname
            )
        keep_alive(transport)
        return transport, protocol  # type: ignore[return-value]

    async def open_socket(self, host: str, port: int) -> socket.socket:
        """A TCP socket connected to `host:port`, its name looked up here (several
        addresses race), for a client that makes its own connection on it: the Redis
        state store's (health/redis_connection.py)."""
        return await connected_socket(await self.addresses(host, port))

    def _look_up(self, host: str, port: int) -> asyncio.Future[list[Address]]:
        """The lookup, on a thread of its own: a daemon, so that an exit does not wait
        for a resolver that does not answer (an executor's threads are joined at exit).
        Each name has one at most, and names come from the config."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Address]] = loop.create_future()

        def answer(result: list[Address] | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is None and not result:  # no address: said as the resolver says it
                error = socket.gaierror(socket.EAI_NONAME, f"{host}: no address")
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def work() -> None:
            try:
                result, error = self._lookup(host, port), None
            except Exception as exc:  # handed to the waiters
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(answer, result, error)

        threading.Thread(target=work, name=f"resolve {host}", daemon=True).start()
        return future

    def _settle(self, name: tuple[str, int], done: asyncio.Future[list[Address]]) -> None:
        if self._pending.get(name) is done:
            del self._pending[name]
        if done.cancelled():
            return
        if done.exception() is None:
            if len(self._answers) >= _MAX_NAMES:
                self._answers.clear()
            now = self._clock()
            self._answers[name] = (now + self._ttl, done.result(), now)
            return
        stale = self._answers.get(name)
        if stale is None:
            return
        error = done.exception()
        gone = isinstance(error, socket.gaierror) and error.errno in _NO_SUCH_NAME
        if gone or self._clock() - stale[2] > MAX_STALE_SECONDS:
            # The name is no more (its addresses may be someone else's now), or the
            # answer is older than any stale one should be: asked again next time.
            del self._answers[name]
        else:  # the resolver failed: the last answer again, until the next `ttl`
            self._answers[name] = (self._clock() + self._ttl, stale[1], stale[2])


def _getaddrinfo(host: str, port: int) -> list[Address]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except UnicodeError as exc:  # a label over 63 characters: no such name
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: {exc}") from None
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in found:
        host_part = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
            # A link-local address (mDNS's `*.local`) connects only with its interface.
            host_part = f"{host_part}%{_interface(int(sockaddr[3]))}"
        address = (family, (host_part, int(sockaddr[1])))
        if address not in addresses:
            addresses.append(address)
    return addresses


def _interface(scope_id: int) -> str:
    try:
        return socket.if_indextoname(scope_id)
    except OSError:
        return str(scope_id)


def _literal(host: str, port: int) -> list[Address] | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return [(family, (str(address), port))]
