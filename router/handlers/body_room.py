"""Room for request bodies: what every request in flight holds, together, is bounded.

`server.max_body_bytes` bounds one body; the connections the front door lets in
(`server.max_connections`) times that is gigabytes, and a request keeps its body (and
its parse, about as large again) until it ends, since the failover may send it again.
A burst of long conversations (a coding agent's 1-10 MB contexts, images in base64)
would grow the process until the kernel or the pod's memory limit kills it, and every
request in flight with it. So the bodies of the requests in flight share a bound,
`server.max_body_bytes_total`, as Envoy's overload manager or HAProxy's fixed buffers
bound a proxy's memory: a request whose body would pass it is refused before a byte of
it is read, with a 503 that says retry in a second (which the SDKs do by themselves),
in its client's dialect. Every other request goes on as before.

A body is counted by its `Content-Length`, taken before it is read and given back when
its request ends. One sent without a length (chunked) is counted at the per-request
limit while it arrives, then at its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router.errors import NoRoomForBody

if TYPE_CHECKING:
    from router.handlers.state import RequestTrace

_MIB = 1024 * 1024


class BodyRoom:
    """The request-body bytes held now by the requests in flight, at most `limit`;
    `each`, one body's limit (server.max_body_bytes)."""

    __slots__ = ("each", "held", "limit", "refused")

    def __init__(self, limit: int, each: int) -> None:
        self.limit = limit
        self.each = each
        self.held = 0
        self.refused = 0  # requests turned away for want of room, since start

    def fits(self, size: int) -> bool:
        return self.held + size <= self.limit

    def hold(self, request: web.BaseRequest) -> int:
        """Take the room `request`'s body needs, before any of it is read, or raise the
        503; the bytes taken, which the request gives back when it ends (endpoint.py).
        Nothing for an empty body, or one over the per-request limit: its 413 is the
        handler's."""
        size = request.content_length
        if size is None:
            size = self.each  # chunked: the most it may be, until it has come
        elif size > self.each or not size:
            return 0
        held = self.held + size
        if held > self.limit:
            self.refused += 1
            raise NoRoomForBody(
                f"the router is holding {self.held / _MIB:.1f} MiB of request bodies, and "
                f"this one's {size / _MIB:.1f} MiB would pass its limit of "
                f"{self.limit / _MIB:.1f} MiB (server.max_body_bytes_total); retry shortly"
            )
        self.held = held
        return size

    def arrived(self, trace: RequestTrace, size: int) -> None:
        """A body sent without a length has come: counted at its size from now on."""
        self.held -= trace.body_held - size
        trace.body_held = size


BODY_ROOM = web.AppKey("router_body_room", BodyRoom)


class BodyRoomMetrics:
    """`llm_router_request_body_bytes` and `llm_router_body_room_refusals_total`, read
    from the room at each scrape: nothing on the request path."""

    def __init__(self, room: BodyRoom) -> None:
        self._room = room

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return self.collect()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "llm_router_request_body_bytes",
            "Request body bytes held now by the requests in flight (server.max_body_bytes_total"
            " bounds them).",
            value=self._room.held,
        )
        yield CounterMetricFamily(
            "llm_router_body_room_refusals",
            "Requests refused (503) because the bodies in flight would pass "
            "server.max_body_bytes_total.",
            value=self._room.refused,
        )
