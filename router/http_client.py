"""A lean HTTP/1.1 client for the providers: keep-alive pools and one POST.

The router asks one thing of its upstream client: POST these bytes with these headers,
hand back the head, then the body as it arrives. aiohttp's ClientSession does that
and much more (cookies, redirects, proxies, auth, tracing, multipart), and paid for
all of it on every request: it was half of the bare pass-through's CPU per streamed
request (bench/cpu.py). This client keeps what a provider call needs: TLS with the
system's trust store, a keep-alive pool per scheme, host and port, a connect timeout,
gzip/deflate bodies. No cookies (one pool serves every key), no redirects (a provider
that redirects a POST is answering wrongly), no proxy (as the router had before).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from router.http_connection import (
    BadResponse,
    BrokenBody,
    Connection,
    Disconnected,
    HttpError,
    Response,
)

KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is closed, not reused
_USER_AGENT = "llm-router"


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL parsed once: where to connect and what the request line says."""

    pool: tuple[str, str, int]  # scheme, host, port
    host: str  # to connect to
    port: int
    tls: bool
    request_line: bytes  # b"POST /v1/chat/completions HTTP/1.1\r\nHost: ...\r\n"


def _target(url: str) -> _Target:
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
    line = f"POST {path} HTTP/1.1\r\nHost: {shown}\r\n".encode("ascii")
    return _Target((parts.scheme, host, port), host, port, tls, line)


def _header_block(headers: Mapping[str, str], length: int) -> bytes:
    lines = []
    names = set()
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r} has a line break or a colon in its name")
        names.add(name.lower())
        lines.append(f"{name}: {value}\r\n")
    for name in ("host", "content-length", "transfer-encoding", "connection"):
        if name in names:
            raise ValueError(f"header {name!r} is the client's to set")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {_USER_AGENT}\r\n")
    if "accept" not in names:
        lines.append("Accept: */*\r\n")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: gzip, deflate\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode()


class HttpClient:
    """Keep-alive connection pools, one per scheme, host and port."""

    def __init__(
        self, *, keepalive: float = KEEPALIVE_SECONDS, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """`ssl_context`: the system's trust store (and SSL_CERT_FILE) when None."""
        self._keepalive = keepalive
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._open: set[Connection] = set()
        self._ssl = ssl_context

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, connect_timeout: float
    ) -> Response:
        """Send the request; return once the response head is in.

        Raises OSError (or TimeoutError) when no connection can be made, and
        `HttpError` when the server does not answer. A reused keep-alive connection
        that the server closed before saying anything is replaced by a new one, once.
        """
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _target(url)
        request = [target.request_line, _header_block(headers, len(body)), body]
        connection = self._reusable(target.pool)
        while True:
            if connection is None:
                connection = await self._connect(target, connect_timeout)
            response = connection.send(request)
            try:
                await response.head()
            except Disconnected as exc:
                connection.close()
                if connection.reused and not exc.anything_received:
                    connection = None  # the server had closed it while idle: once more
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return response

    def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    def _reusable(self, pool: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(pool)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if not connection.closed and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        return None

    async def _connect(self, target: _Target, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        pool = target.pool

        def on_idle(connection: Connection) -> None:
            if not connection.closed:
                self._idle.setdefault(pool, []).append(connection)

        def on_lost(connection: Connection) -> None:
            self._open.discard(connection)
            idle = self._idle.get(pool)
            if idle and connection in idle:
                idle.remove(connection)

        context: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_connection(
                lambda: Connection(loop, on_idle, on_lost),
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        if not connection.closed:  # lost already: on_lost has run, nothing to track
            self._open.add(connection)
        return connection


__all__ = ["BadResponse", "BrokenBody", "Disconnected", "HttpClient", "HttpError", "Response"]
