"""A CONNECT tunnel through an HTTP proxy (RFC 9110 §9.3.6), ready for TLS to go inside.

The proxy's answer is read by a small protocol of its own: one head, at most a few KiB,
then the socket is handed over (`loop.start_tls` puts TLS to the provider on it, with
the provider's name for SNI and the certificate check). A proxy that refuses the tunnel
(403, 407, 502...) or closes raises `ProxyRefused`, a connection failure of the route:
nothing was sent to the provider.
"""

from __future__ import annotations

import asyncio
import re

from router.types import Proxy
from router.upstream.http_errors import HttpError
from router.upstream.resolver import Resolver

_MAX_HEAD = 16 * 1024
_STATUS = re.compile(r"[0-9]{3}")


class ProxyRefused(HttpError):
    """The proxy did not open the way to the provider (its answer, or a close)."""


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: its head, up to the blank line."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proxy: Proxy) -> None:
        self._proxy = proxy
        self._buffer = b""
        self.extra = False
        self.answer: asyncio.Future[bytes] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            self.extra = len(self._buffer) > end + 4  # a refusal's body, or a bad proxy
            self.answer.set_result(self._buffer[:end])
        elif len(self._buffer) > _MAX_HEAD:
            self.answer.set_exception(
                ProxyRefused(f"the proxy {self._proxy.shown} sent an over-long answer")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(
                ProxyRefused(f"the proxy {self._proxy.shown} closed the connection")
            )


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def open_tunnel(proxy: Proxy, host: str, port: int, resolver: Resolver) -> asyncio.Transport:
    """A transport to `host:port` through `proxy`: connected, the proxy's 200 read, the
    transport's reading paused until the caller hands it to its own protocol."""
    loop = asyncio.get_running_loop()
    transport, handshake = await resolver.connect(
        lambda: _Handshake(loop, proxy), proxy.host, proxy.port
    )
    try:
        transport.write(connect_request(proxy, host, port))
        head = await handshake.answer
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        # Three ASCII digits: str.isdigit() takes '²' too, which int() refuses.
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _STATUS.fullmatch(parts[1]):
            raise ProxyRefused(f"the proxy {proxy.shown} answered CONNECT with no HTTP status")
        if not 200 <= int(parts[1]) < 300:
            reason = parts[2] if len(parts) > 2 else ""
            raise ProxyRefused(
                f"the proxy {proxy.shown} refused the tunnel to {host}:{port}: "
                f"{parts[1]} {reason[:100]}".rstrip()
            )
        if handshake.extra:  # nothing may come before the provider's TLS answer
            raise ProxyRefused(f"the proxy {proxy.shown} sent bytes after its 200")
    except BaseException:
        transport.close()
        raise
    transport.pause_reading()
    return transport


__all__ = ["ProxyRefused", "connect_request", "open_tunnel"]
