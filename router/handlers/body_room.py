"""Room for request bodies: what every request in flight holds, together, is bounded.

`server.max_body_bytes` bounds one body; the connections the front door lets in
(`server.max_connections`) times that is gigabytes, and a request keeps its body (and
its parse, about as large again for text) until it ends, since the failover may send it
again. A burst of long conversations (a coding agent's 1-10 MB contexts, images in
base64) would grow the process until the kernel or the pod's memory limit kills it,
and every request in flight with it. So the bodies of the requests in flight share a
bound, `server.max_body_bytes_total`, as Envoy's overload manager or HAProxy's fixed
buffers bound a proxy's memory: a request whose body would pass it is refused with a
503 that says retry in a second (which the SDKs do by themselves), in its client's
dialect. Every other request goes on as before.

A body is counted as it arrives, so a slow upload holds only what it has sent: one that
declared a large `Content-Length` and sends a byte a minute does not keep others out.
A body that has all arrived when its handler runs (nearly every one) is counted at
once. One still arriving is refused before it is read if its declared length does not
fit now (with no `100 Continue` first), else counted piece by piece and refused at the
piece that would pass the bound. The request gives its room back when it ends
(endpoint.py), or, a stream, once its head has gone to the client (model_api.py): from
then on nothing can send the body again, and a long generation would otherwise hold
its body for minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router.errors import NoRoomForBody

if TYPE_CHECKING:
    from router.handlers.state import RequestTrace

_MIB = 1024 * 1024


class BodyRoom:
    """The request-body bytes held now by the requests in flight, at most `limit`."""

    __slots__ = ("held", "limit", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0  # requests turned away for want of room, since start

    def fits(self, size: int) -> bool:
        return self.held + size <= self.limit

    def check(self, size: int) -> None:
        """Raise the 503 now if a body of `size` bytes would not fit: one declared that
        large is refused before any of it is read (and without its 100 Continue)."""
        if self.held + size > self.limit:
            self._refuse()

    def take(self, trace: RequestTrace, size: int) -> None:
        """Count `size` more bytes of `trace`'s request body, or raise the 503."""
        held = self.held + size
        if held > self.limit:
            self._refuse()
        self.held = held
        trace.body_held += size

    def let_go(self, trace: RequestTrace) -> None:
        """`trace`'s request no longer needs its body (a stream past its commit, which
        cannot fail over): its room back now, and the trace's hold on the body and its
        parse dropped. The request's end (endpoint.py) then gives back nothing more."""
        self.held -= trace.body_held
        trace.body_held = 0
        trace.body = None

    def _refuse(self) -> NoReturn:
        self.refused += 1
        raise NoRoomForBody(
            f"the router is holding {self.held / _MIB:.1f} MiB of request bodies, and "
            f"this one's would pass its limit of {self.limit / _MIB:.1f} MiB "
            "(server.max_body_bytes_total); retry shortly"
        )


async def read_counted(request: web.BaseRequest, room: BodyRoom, trace: RequestTrace) -> bytes:
    """A body still arriving, each piece counted in `room` as it comes (or the 503),
    within the per-request limit (or aiohttp's 413)."""
    limit = request.client_max_size
    content = request.content
    pieces: list[bytes] = []
    size = 0
    while piece := await content.readany():
        size += len(piece)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        room.take(trace, len(piece))
        pieces.append(piece)
    return b"".join(pieces)


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
