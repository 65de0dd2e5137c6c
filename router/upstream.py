"""Talking to providers: one ClientSession, and the only place aiohttp errors are caught.

Every aiohttp client exception is mapped here to the router's own `UpstreamError`
classes (httpx `_transports/default.py` does the same at its boundary), so the rest of
the code deals in one closed set of failures. asyncio's TimeoutError is checked first:
aiohttp's ServerTimeoutError is also a ServerConnectionError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import aiohttp
from multidict import CIMultiDictProxy

from router.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from router.types import Route, Timeouts

# Never forwarded: the client's own credentials (the route's key replaces them),
# hop-by-hop headers, and what aiohttp computes itself for the new request.
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
    }
)


def forwardable_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers that may go upstream (SDK hints such as `openai-beta`)."""
    return {
        name: value
        for name, value in client_headers.items()
        if (lowered := name.lower()) not in _DROPPED_REQUEST_HEADERS
        and not lowered.startswith("x-router-")
    }


@contextmanager
def upstream_errors(route_id: str, phase: str) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:  # before ClientConnectionError: ServerTimeoutError is both
        raise UpstreamTimeout(route_id, phase) from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamProtocolError(route_id, f"broken response body: {exc}") from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamProtocolError(route_id, f"bad response: {exc.message}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamConnectionError(route_id, f"{type(exc).__name__}: {exc}") from exc


class UpstreamResponse:
    """A provider's response whose head has arrived; the body is read through here."""

    __slots__ = ("_response", "route_id")

    def __init__(self, response: aiohttp.ClientResponse, route_id: str) -> None:
        self._response = response
        self.route_id = route_id

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    async def read(self, timeout: float) -> bytes:
        with upstream_errors(self.route_id, "read"):
            async with asyncio.timeout(timeout):
                return await self._response.read()

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        """The next piece of the body as it arrives; b"" at the end."""
        with upstream_errors(self.route_id, phase):
            async with asyncio.timeout(timeout):
                return await self._response.content.readany()

    def finish(self) -> None:
        """Give the connection back to the pool when the body was read to the end, and
        close it otherwise: a stream the client left must reach the provider as cancelled."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Upstream:
    def __init__(self, session: aiohttp.ClientSession, timeouts: Timeouts) -> None:
        self._session = session
        self._timeouts = timeouts
        self._connect_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect, sock_connect=timeouts.connect
        )

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
        with upstream_errors(route.id, "first_byte"):
            async with asyncio.timeout(head_timeout):
                response = await self._session.post(
                    url, data=body, headers=headers, timeout=self._connect_timeout
                )
        return UpstreamResponse(response, route.id)


def new_session() -> aiohttp.ClientSession:
    # One connection pool per app; per-host pools inside it keep connections alive
    # to each upstream base URL. No global limit: the providers' own limits apply.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True)


__all__ = [
    "Upstream",
    "UpstreamError",
    "UpstreamResponse",
    "forwardable_headers",
    "new_session",
]
