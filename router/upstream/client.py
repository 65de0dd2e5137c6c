"""A lean HTTP/1.1 client for the providers: keep-alive pools and one POST.

The router asks one thing of its upstream client: POST these bytes with these headers,
hand back the head, then the body as it arrives. aiohttp's ClientSession does that
and much more (cookies, redirects, proxies, auth, tracing, multipart), and paid for
all of it on every request: it was half of the bare pass-through's CPU per streamed
request (bench/cpu.py). This client keeps what a provider call needs: TLS with the
system's trust store, a keep-alive pool per scheme, host and port, a connect timeout,
gzip/deflate bodies, and an HTTP proxy when the key has one (a CONNECT tunnel for
https://, tunnel.py; an absolute-form request line for http://). No cookies (one pool
serves every key), no redirects (a provider that redirects a POST is answering wrongly),
no retries (a POST that went out may have been read; the failover decides what is next).

Tuned: every choice here was measured with `bench/cpu.py` (README "Performance").
Change it with a before/after figure.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from router.types import Limits, Proxy
from router.upstream.connection import Connection
from router.upstream.http_errors import (
    BadResponse,
    BrokenBody,
    Disconnected,
    HttpError,
    TooLarge,
)
from router.upstream.resolver import Resolver
from router.upstream.response import Response
from router.upstream.tunnel import ProxyRefused, open_tunnel

_USER_AGENT = "llm-router"
_BLOCKS_KEPT = 512
# A block larger than this is built for its request and not kept: a client that varies
# large header values would otherwise fill the cache with them (512 x 64 KiB heads).
_BLOCK_KEPT_BYTES = 8192


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL parsed once (per proxy): where to connect and what the request line says."""

    pool: tuple[str, str, int, Proxy | None]  # scheme, host, port, the proxy on the way
    host: str  # the provider's
    port: int
    tls: bool
    request_line: bytes  # b"POST /v1/chat/completions HTTP/1.1\r\nHost: ...\r\n"
    proxy: Proxy | None = None


def _target(url: str, proxy: Proxy | None = None) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        shown = f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if proxy is not None and not tls:
        # Through a proxy, plain HTTP names the whole URL (RFC 9112 §3.2.2), and each
        # request carries the proxy's credentials (a tunnel's went with CONNECT).
        line = f"POST http://{shown}{path} HTTP/1.1\r\nHost: {shown}\r\n"
        if proxy.authorization is not None:
            line += f"Proxy-Authorization: {proxy.authorization}\r\n"
    else:
        line = f"POST {path} HTTP/1.1\r\nHost: {shown}\r\n"
    return _Target((parts.scheme, host, port, proxy), host, port, tls, line.encode("ascii"), proxy)


# Control characters other than tab may not appear in a field (RFC 9110 5.5); CR and LF
# would end the line and let a value write headers of its own. _CONTROL leaves CR and LF
# to a count: each line has exactly one pair, its end.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SET_HERE = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class InvalidHeader(ValueError):
    """A header that cannot go on the wire as given."""


def _header_block(headers: Mapping[str, str]) -> bytes:
    """The header lines, checked, with this client's defaults; Content-Length and the
    blank line are the caller's (they change with every body)."""
    lines = []
    names = set()
    for name, value in headers.items():
        names.add(name.lower())
        lines.append(f"{name}: {value}\r\n")
    fields = "".join(lines)
    joined_names = "".join(headers)
    # One search and two counts over every line at once, two over the names.
    if (
        _CONTROL.search(fields)
        or fields.count("\n") != len(lines)
        or fields.count("\r") != len(lines)
        or ":" in joined_names
        or " " in joined_names
    ):
        bad = next(
            name
            for name, value in headers.items()
            if _FORBIDDEN.search(name + value) or ":" in name or " " in name
        )
        raise InvalidHeader(f"header {bad!r} has a control character, colon or space in it")
    if names & _SET_HERE:
        raise InvalidHeader(f"headers {sorted(names & _SET_HERE)} are the client's to set")
    if "user-agent" not in names:
        fields += f"User-Agent: {_USER_AGENT}\r\n"
    if "accept" not in names:
        fields += "Accept: */*\r\n"
    if "accept-encoding" not in names:
        fields += "Accept-Encoding: gzip, deflate\r\n"
    # surrogateescape: a header byte the server read as not UTF-8 goes out as it came in.
    return fields.encode("utf-8", "surrogateescape")


class _Pool:
    """The connections to one scheme, host and port: the idle ones (oldest first), how
    many are open or opening, and the requests waiting for one to free up."""

    __slots__ = ("idle", "open", "waiting")

    def __init__(self) -> None:
        self.idle: list[Connection] = []
        self.open = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    def wake_one(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class HttpClient:
    """Keep-alive connection pools, one per scheme, host and port, each capped at
    `limits.max_connections_per_host`; a request past the cap waits for a connection
    (within its own deadline, which the caller sets)."""

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        """`ssl_context`: the system's trust store (and SSL_CERT_FILE) when None."""
        self._limits = limits if limits is not None else Limits()
        self._keepalive = self._limits.idle_connection_seconds
        self._pools: dict[tuple[str, str, int, Proxy | None], _Pool] = {}
        self._targets: dict[str, _Target] = {}
        self._proxied: dict[tuple[str, Proxy], _Target] = {}
        self._blocks: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._open: set[Connection] = set()
        self._ssl = ssl_context
        self._sweep: asyncio.TimerHandle | None = None
        # Names looked up one at a time each, on a thread of its own (resolver.py).
        self._resolver = resolver if resolver is not None else Resolver()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        proxy: Proxy | None = None,
    ) -> Response:
        """Send the request (through `proxy` when given); return once the response head
        is in. Connections through different proxies, or none, are pooled apart.

        Raises OSError (or TimeoutError) when no connection can be made, and
        `HttpError` when the server does not answer. A request that went out is never
        sent again here, not even when a reused connection turns out closed: the
        provider may have read it, and a POST to an LLM costs money (Go's net/http and
        aiohttp retry only idempotent requests; the failover decides what is next).
        """
        if proxy is None:
            target = self._targets.get(url)
            if target is None:
                target = self._targets[url] = _target(url)
        else:
            target = self._proxied.get((url, proxy))
            if target is None:
                target = self._proxied[(url, proxy)] = _target(url, proxy)
        # The same headers come again and again (a key's auth, an SDK's own): their
        # checked block is kept, a few hundred at most, of a few KiB each.
        fields = tuple(headers.items())
        block = self._blocks.get(fields)
        if block is None:
            block = _header_block(headers)
            if len(block) <= _BLOCK_KEPT_BYTES:
                if len(self._blocks) >= _BLOCKS_KEPT:
                    self._blocks.clear()
                self._blocks[fields] = block
        request = [target.request_line, block, b"Content-Length: %d\r\n\r\n" % len(body), body]
        pool = self._pools.get(target.pool)
        if pool is None:
            pool = self._pools[target.pool] = _Pool()
        connection = self._reusable(pool)
        if connection is None:
            connection = await self._connection(target, pool, connect_timeout)
        response = connection.send(request)
        try:
            await response.head()
        except BaseException:
            response.close()
            raise
        if proxy is not None and not target.tls and response.status == 407:
            response.close()  # the proxy's answer, not the provider's
            raise ProxyRefused(f"the proxy {proxy.shown} asks for credentials (407)")
        return response

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        for pool in self._pools.values():
            pool.idle.clear()

    def open_connections(self) -> int:
        """Connections open or opening, idle ones included."""
        return sum(pool.open for pool in self._pools.values())

    def _reusable(self, pool: _Pool) -> Connection | None:
        idle = pool.idle
        if not idle:
            return None
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            # Its loop's clock: asyncio.get_running_loop() is a getpid() syscall on 3.11.
            idle_for = connection.loop.time() - connection.idle_since
            if (
                connection.usable()
                and idle_for < self._keepalive
                and idle_for < connection.keep_for
            ):
                return connection
            connection.close()
        return None

    async def _connection(self, target: _Target, pool: _Pool, timeout: float) -> Connection:
        """A new connection, once the pool has room for one; an idle one if one frees
        up first."""
        loop = asyncio.get_running_loop()
        while pool.open >= self._limits.max_connections_per_host:
            waiter = loop.create_future()
            pool.waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake_one()  # woken, then cancelled: the turn passes on
                else:
                    waiter.cancel()
                raise
            if (connection := self._reusable(pool)) is not None:
                return connection
        pool.open += 1
        try:
            return await self._connect(target, pool, timeout)
        except BaseException:
            pool.open -= 1
            pool.wake_one()
            raise

    async def _connect(self, target: _Target, pool: _Pool, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()

        def on_idle(connection: Connection) -> None:
            if connection.closed:
                return
            pool.idle.append(connection)
            if pool.waiting:
                pool.wake_one()
            if self._sweep is None:
                self._sweep = loop.call_at(connection.idle_since + self._keepalive, self._expire)

        def on_lost(connection: Connection) -> None:
            if connection in self._open:
                self._open.discard(connection)
                pool.open -= 1
                if pool.waiting:
                    pool.wake_one()
            if connection in pool.idle:
                pool.idle.remove(connection)

        context: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        proxy = target.proxy
        async with asyncio.timeout(timeout):
            if proxy is None:
                _, connection = await self._resolver.connect(
                    lambda: Connection(loop, self._limits, on_idle, on_lost),
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
            elif context is None:  # plain HTTP: absolute-form requests to the proxy
                _, connection = await self._resolver.connect(
                    lambda: Connection(loop, self._limits, on_idle, on_lost),
                    proxy.host,
                    proxy.port,
                )
            else:  # TLS to the provider inside a CONNECT tunnel, checked by its name
                tunnel = await open_tunnel(proxy, target.host, target.port, self._resolver)
                connection = Connection(loop, self._limits, on_idle, on_lost)
                try:
                    tls = await loop.start_tls(
                        tunnel, connection, context, server_hostname=target.host
                    )
                except BaseException:
                    tunnel.close()
                    raise
                if tls is None:  # asyncio's type allows it: the tunnel closed meanwhile
                    raise Disconnected("the proxy closed the tunnel during the TLS handshake")
                connection.connection_made(tls)
        if connection.closed:  # lost already: its slot is free again
            raise Disconnected("the server closed the connection as it opened")
        self._open.add(connection)
        return connection

    def _expire(self) -> None:
        """Close the connections idle past the keep-alive time, with or without traffic
        (a burst of streams must not leave its sockets open), and come back when the
        next one is due."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = None
        for pool in self._pools.values():
            idle = pool.idle
            while idle and now - idle[0].idle_since >= self._keepalive:
                idle.pop(0).close()  # on_lost frees its slot
            if idle:
                first = idle[0].idle_since + self._keepalive
                due = first if due is None else min(due, first)
        if due is not None:
            self._sweep = loop.call_at(due, self._expire)


__all__ = [
    "BadResponse",
    "BrokenBody",
    "Disconnected",
    "HttpClient",
    "HttpError",
    "InvalidHeader",
    "ProxyRefused",
    "Response",
    "TooLarge",
]
