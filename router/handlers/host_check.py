"""Which `Host` and `Origin` the router answers: the defence against DNS rebinding and
cross-site requests when no client key guards it.

A web page can make the browser send requests to 127.0.0.1:4000. A `text/plain` POST
needs no CORS preflight, and a page whose own name was re-pointed at 127.0.0.1 (DNS
rebinding) can even read the answers. Without `client_keys` the router therefore answers
only requests addressed to a loopback name or a configured one (`server.allowed_hosts`),
and refuses any request that carries an `Origin` (browsers send one on every cross-origin
request and every POST) other than its own or a configured one (`server.allowed_origins`).
Clients that are not browsers (SDKs, curl) send no `Origin` and a loopback `Host`.
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from router.errors import Forbidden
from router.types import ServerSettings

ANY = "*"
_PORT = re.compile(r"(?::[0-9]*)?")  # after a Host's name: nothing, or a port (RFC 9110 7.2)
_JUDGED_KEPT = 256


class HostCheck:
    """Applies without `client_keys`; with them, only the lists set explicitly do."""

    def __init__(self, server: ServerSettings) -> None:
        open_door = not server.client_keys
        hosts = server.allowed_hosts
        self._check_host = ANY not in (hosts or ()) and (open_door or hosts is not None)
        self._hosts = frozenset(hosts or ())
        origins = server.allowed_origins
        self._check_origin = ANY not in origins and (open_door or bool(origins))
        self._origins = frozenset(origins)
        # Host header values already judged: a client sends the same one on every request
        # (parsing an address is most of the check's cost). Bounded: cleared when full.
        self._judged: dict[str, bool] = {}

    @property
    def active(self) -> bool:
        return self._check_host or self._check_origin

    def check(self, request: web.Request) -> None:
        host = request.headers.get("Host", "")
        if self._check_host and not self._answered(host):
            raise Forbidden(
                f"Host {host[:100]!r} is not answered here: without server.client_keys the "
                "router serves only loopback names; add it to server.allowed_hosts",
                code="host_not_allowed",
            )
        origin = request.headers.get("Origin")
        if self._check_origin and origin is not None and not self._origin_allowed(origin, host):
            raise Forbidden(
                f"cross-site request from Origin {origin[:100]!r} refused: add it to "
                "server.allowed_origins, or set server.client_keys",
                code="origin_not_allowed",
            )

    def _answered(self, host: str) -> bool:
        allowed = self._judged.get(host)
        if allowed is None:
            if len(self._judged) >= _JUDGED_KEPT:
                self._judged.clear()
            allowed = self._judged[host] = self._host_allowed(host_name(host))
        return allowed

    def _host_allowed(self, name: str) -> bool:
        return is_loopback_name(name) or name in self._hosts

    def _origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower()
        if origin in self._origins:
            return True
        # The router's own pages (the status page) are same-origin: scheme://<Host>, for a
        # Host the router answers by name (not merely through allowed_hosts: "*", which
        # would let a rebound name count as the router's own).
        scheme, _, authority = origin.partition("://")
        host = host.strip().lower()
        return (
            scheme in ("http", "https")
            and authority == host
            and self._host_allowed(host_name(host))
        )


def host_name(host: str) -> str:
    """The name in a `Host` header, lower case, without port, brackets or a final dot;
    "" when what follows the name is no port (`127.0.0.1:4000@evil.com`, `[::1]x`), which
    no browser sends and nothing is answered for."""
    host = host.strip().lower()
    if host.startswith("["):
        close = host.find("]")
        if close < 0 or not _PORT.fullmatch(host, close + 1):
            return ""
        return host[1:close]
    if host.count(":") == 1:
        host, _, port = host.partition(":")
        if not _PORT.fullmatch(":" + port):
            return ""
    return host.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
