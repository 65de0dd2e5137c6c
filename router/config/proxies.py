"""Which HTTP proxy, if any, a key's api_base is reached through: read once at load.

The environment is read as curl and Python's requests read it: `https_proxy` for https://
targets, `http_proxy` for http:// ones, `all_proxy` for both when the specific one is
unset, and `no_proxy` for the hosts reached directly; each in lower or upper case, the
lower-case one winning (curl's rule). A key's `proxy:` in routes.yaml (a URL, or `none`)
overrides all of them. Only http:// proxies are spoken (CONNECT for https:// targets);
a SOCKS or https:// proxy is a load error, never a silent direct connection.

NO_PROXY entries, comma separated: `*` (every host); a host name, which also covers its
subdomains, with or without a leading dot (`example.com`, `.example.com`); an IP address
or a CIDR block (`10.0.0.0/8`), matched against a URL that names the address (names are
not resolved); any of these with `:port` to match that port only.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from router.types import Proxy

# curl's default port for a proxy URL without one.
DEFAULT_PROXY_PORT = 1080

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyError(ValueError):
    """A proxy setting the router cannot use; the message never quotes credentials."""


def parse_proxy(text: str) -> Proxy:
    """`http://[user:password@]host[:port]`; the scheme may be left out, as in curl."""
    text = text.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyError("is not a proxy URL (http://host:port)") from None
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise ProxyError(
            f"is a {scheme}:// proxy; SOCKS proxies are not supported, only http:// proxies"
        )
    if scheme == "https":
        raise ProxyError(
            "is an https:// proxy (TLS to the proxy), which is not supported; an http:// "
            "proxy still carries TLS to the provider end to end through CONNECT"
        )
    if scheme != "http" or not parts.hostname:
        raise ProxyError("is not a proxy URL (http://host:port)")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Proxy(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PROXY_PORT,
        authorization=authorization,
    )


@dataclass(frozen=True, slots=True)
class _Bypass:
    """One NO_PROXY entry."""

    name: str | None = None  # a host name: itself and its subdomains
    network: _Network | None = None  # an address (a /32 or /128) or a CIDR block
    port: int | None = None

    def covers(self, host: str, address: _Address | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and address in self.network
        name = self.name or ""
        return host == name or host.endswith(f".{name}")


def _bypass(entry: str) -> _Bypass | None:
    port = None
    host = entry
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif entry.count(":") == 1:  # name:port or v4:port (a bare v6 address has more)
        host, _, given = entry.partition(":")
        if not given.isdigit():
            return None
        port = int(given)
    try:
        return _Bypass(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    name = host.lower().removeprefix("*").strip(".")
    return _Bypass(name=name, port=port) if name else None


@dataclass(frozen=True, slots=True)
class NoProxy:
    everything: bool
    entries: tuple[_Bypass, ...]

    @classmethod
    def parse(cls, text: str) -> NoProxy:
        entries = [part.strip() for part in text.replace(" ", ",").split(",")]
        if "*" in entries:
            return cls(True, ())
        parsed = (_bypass(entry) for entry in entries if entry)
        return cls(False, tuple(entry for entry in parsed if entry is not None))

    def covers(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        try:
            address: _Address | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        return any(entry.covers(host, address, port) for entry in self.entries)


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(the variable's name, its value): the lower-case one when set, as curl does."""
    for variable in (name.lower(), name.upper()):
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


@dataclass(frozen=True, slots=True)
class ProxyEnvironment:
    """The proxy variables, read once; `proxy_for` chooses per URL."""

    https: tuple[str, str] | None
    http: tuple[str, str] | None
    all: tuple[str, str] | None
    no_proxy: NoProxy

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> ProxyEnvironment:
        no_proxy = _variable(environ, "no_proxy")
        return cls(
            https=_variable(environ, "https_proxy"),
            http=_variable(environ, "http_proxy"),
            all=_variable(environ, "all_proxy"),
            no_proxy=NoProxy.parse(no_proxy[1] if no_proxy else ""),
        )

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy for `url`, None for a direct connection. ProxyError names the
        variable that holds an unusable proxy (never its value: it may hold a password)."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        setting = (self.https if tls else self.http) or self.all
        if setting is None or not parts.hostname:
            return None
        if self.no_proxy.covers(parts.hostname, parts.port or (443 if tls else 80)):
            return None
        variable, value = setting
        try:
            return parse_proxy(value)
        except ProxyError as exc:
            raise ProxyError(f"the environment variable {variable} {exc}") from None


__all__ = ["DEFAULT_PROXY_PORT", "NoProxy", "ProxyEnvironment", "ProxyError", "parse_proxy"]
