"""A send deadline for a client connection (nginx's send_timeout): once the transport's
buffer is full, a client that acknowledges nothing more of what it is sent for `send`
seconds is reset, so a client that stops reading a stream (a frozen editor, a laptop
asleep) does not hold its connection, its upstream connection and its request for good.

It is a layer of aiohttp's connection handler, under `client_connection.Connection`
(which adds the read deadlines and the limits on a request's head and body). It reads
`_current_request` of aiohttp's `RequestHandler`, the request its handler is serving,
for the request id of its log line; tests/integration/test_send_timeout.py notices if
a new aiohttp moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from typing import Any

import structlog
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("router.front_door")

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
# Linux's struct tcp_info: tcpi_bytes_acked is the u64 at byte 120 (Linux 4.1 and later).
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_INFO_SIZE, _BYTES_ACKED_AT, _BYTES_ACKED = 128, 120, struct.Struct("=Q")


class SendDeadlineHandler(RequestHandler):
    """aiohttp's connection handler plus a send deadline of `send` seconds."""

    __slots__ = ("_send_seconds", "_sending", "_taken")

    def __init__(self, manager: Any, *, send: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._send_seconds = send
        self._sending: asyncio.TimerHandle | None = None  # its timer, while writing is paused
        self._taken = 0  # what the client had taken at the last look (_taken_so_far)

    def pause_writing(self) -> None:
        """The transport's buffer is past its high-water mark: the client reads slower
        than it is sent to. Only then is there a deadline to keep (nothing per write)."""
        super().pause_writing()
        self._taken = self._taken_so_far()
        self._sending = self._loop.call_later(self._send_seconds, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None
        super().connection_lost(exc)

    def _taken_so_far(self) -> int:
        """A count that grows as the client takes what it is sent: on Linux the bytes it
        has acknowledged (TCP_INFO), which, its window full, it does as it reads. What
        is still queued does not tell it: a write can add as much as was read, and the
        kernel takes more from the transport only once half its queue is free. Elsewhere
        the transport's buffer shrinking is the best sign there is."""
        transport = self.transport
        if transport is None:
            return 0
        sock = transport.get_extra_info("socket")
        if sock is not None and _TCP_INFO is not None:
            with contextlib.suppress(OSError, ValueError, struct.error):
                info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
                if len(info) >= _TCP_INFO_SIZE:  # Linux 4.1 or later
                    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0])
        return -transport.get_write_buffer_size()

    def _send_expired(self) -> None:
        self._sending = None
        transport = self.transport
        if transport is None:
            return
        taken = self._taken_so_far()
        if taken > self._taken:  # it read some meanwhile: another period from now
            self._taken = taken
            self._sending = self._loop.call_later(self._send_seconds, self._send_expired)
            return
        # Also when closing: a transport closes only once its buffer is sent, which a
        # client that reads nothing never lets happen. Reset, not closed (nginx's
        # reset_timedout_connection): a close would leave the kernel sending what it
        # holds to that client, megabytes kept in FIN_WAIT1. The handler's pending
        # write ends as on a client that left: a stream's request is charged to the
        # client (499), its upstream request cancelled.
        request = self._current_request
        traces = request.values() if request is not None else ()
        # The id from the request's trace (handlers/state.py, which this module does not
        # import): uvloop runs this timer outside the request's logging context.
        request_id = next((t.request_id for t in traces if hasattr(t, "request_id")), None)
        log.info(
            "client_send_timeout",
            request_id=request_id,
            seconds=self._send_seconds,
            unsent_bytes=transport.get_write_buffer_size(),
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        transport.abort()
