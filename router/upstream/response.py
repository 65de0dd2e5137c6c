"""One response from a provider, as its connection (connection.py) parses it: the head
once it is whole, then the body's pieces to relay as they come, within the limits on
what it may hold, decoded when it is compressed. Reading pauses the connection when the
relay falls behind, and a read can be failed from outside (the router's deadlines).

A compressed read is decoded a piece at a time (inflate.py): the input left is held in
the decoder and reading pauses until the relay has taken it all, piece by piece (a whole
read takes it at once), so one read of a bomb-like body never inflates in one go.

Tuned: every choice here was measured with `bench/cpu.py` (README "Performance").
Change it with a before/after figure.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections import deque
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from router.types import Limits
from router.upstream.http_errors import (
    BadResponse,
    BrokenBody,
    Disconnected,
    HttpError,
    TooLarge,
)
from router.upstream.inflate import Decoder

if TYPE_CHECKING:
    from router.upstream.connection import Connection

# Reading from the provider pauses above this many unread body bytes, and goes on
# once the relay has taken them (aiohttp's StreamReader pauses at 128 KiB).
_HIGH_WATER = 1 << 17
# An error answer is a few hundred bytes of JSON; one past this is not an error body.
_MAX_ERROR_BODY = 1 << 20


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class Response:
    """A response whose head is in (once `head()` returned); its body is read here."""

    __slots__ = (
        "_all_in",
        "_close_delimited",
        "_complete",
        "_connection",
        "_decoder",
        "_done_with",
        "_exception",
        "_limits",
        "_pending",
        "_size",
        "_waiter",
        "_whole",
        "head_done",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self, connection: Connection, limits: Limits) -> None:
        self._connection = connection
        self._limits = limits
        self._pending: deque[bytes] = deque()
        self._size = 0
        self._whole = False  # read() waits for all of it: reading must not pause
        self.head_done = False
        self._complete = False
        self._close_delimited = False  # no Content-Length, not chunked: the close ends it
        self._done_with = False  # released or closed: the connection is not ours any more
        self._decoder: Decoder | None = None
        self._all_in = False  # the message ended, and the decoder still holds some of it
        self._exception: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.keep_alive = False
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS

    async def head(self) -> None:
        """Wait until the status and headers are in."""
        while not self.head_done:
            if self._exception is not None:
                raise self._exception
            await self._wait()

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last read, at least one; b"" at the end."""
        while not self._pending:
            if self._exception is not None:
                raise self._exception
            if self._complete:
                return b""
            decoder = self._decoder
            if decoder is not None and decoder.holding:
                self._decode_held()  # read already: the socket waits until it is decoded
                continue
            # _wait(), inline: a stream reads here once an event, and each frame between
            # the task and the future is woken on every one.
            waiter = self._waiter = self._connection.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        pending = self._pending
        data = pending.popleft() if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        if self._decoder is None or not self._decoder.holding:
            self._connection.resume()
        return data

    async def read(self) -> bytes:
        """The whole body, within the body limit."""
        self._whole = True
        try:
            self._check_whole_size()  # what arrived before the whole body was asked for
            if self._decoder is not None:
                self._drain()  # and what a read before held back
        except HttpError as exc:
            self._connection.close()
            raise exc from None
        self._connection.resume()
        while not self._complete:
            if self._exception is not None:
                raise self._exception
            await self._wait()
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        return data

    @property
    def held(self) -> int:
        """Body bytes in and not yet read: for a whole read, what has come so far."""
        return self._size

    def at_eof(self) -> bool:
        """Whether the body is complete and all of it has been read."""
        return self._complete and not self._pending

    def set_exception(self, exc: BaseException) -> None:
        """Fail the read that waits now, and every later one."""
        if self._complete and not self._pending:
            return  # nothing left to fail: a late deadline or a close after the end
        self._exception = exc
        self._wake()

    def release(self) -> None:
        """Done with the response: the connection goes back to its pool if it can be
        used again (the body read to the end, keep-alive), and is closed otherwise."""
        if self._done_with:
            return
        self._done_with = True
        if self.at_eof() and self.keep_alive and self._exception is None:
            hint = self.headers.get("Keep-Alive")
            if hint is not None:
                # The server closes it after `timeout=N` idle seconds: a request sent as
                # it does would fail with nothing answered. Used for N - 1 s at most.
                seconds = _keep_alive_timeout(hint)
                if seconds is not None:
                    if seconds <= 1.0:
                        self._connection.close()
                        return
                    self._connection.keep_for = seconds - 1.0
            self._connection.idle()
        else:
            self._drop()
            self._connection.close()

    def close(self) -> None:
        if not self._done_with:
            self._done_with = True
            self._drop()
            self._connection.close()

    def _drop(self) -> None:
        """Let go of the body bytes not read, and the decoder. A response given up part
        way (a client gone, a body over its limit or broken) is in a cycle with its
        connection, and an exception's traceback may hold it too: the garbage collector
        frees such cycles only after thousands of allocations (server.py raises its
        threshold), and until then they held up to a whole body each (tens of MB)."""
        self._pending.clear()
        self._size = 0
        self._decoder = None
        self._exception = None  # its traceback holds the attempt's frames, and their Call

    async def _wait(self) -> None:
        waiter = self._waiter = self._connection.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # What the connection's parser reports.

    def on_headers_complete(
        self, status: int, keep_alive: bool, fields: list[tuple[str, str]]
    ) -> None:
        """The head is whole: its status and its fields, in order."""
        headers: CIMultiDict[str] = CIMultiDict(fields)
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate"):
            self._decoder = Decoder(encoding, self._limits.max_inflate_ratio)
        elif encoding != "identity":
            raise BadResponse(f"unsupported content-encoding {encoding!r}")
        self._close_delimited = "Content-Length" not in headers and (
            "chunked" not in headers.get("Transfer-Encoding", "").lower()
        )
        self.status = status
        self.keep_alive = keep_alive
        self.headers = CIMultiDictProxy(headers)
        self.head_done = True
        self._wake()

    def on_body(self, chunks: list[bytes]) -> None:
        """The body chunks the parser found in one read (a chunked body's, one or more)."""
        if self._decoder is not None:
            self._on_compressed(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            return
        self._pending.extend(chunks)
        self._size += sum(map(len, chunks))
        if self._size > _HIGH_WATER:
            if self._whole:
                self._check_whole_size()
            else:
                self._connection.pause()  # read() turns it into a whole read, and checks
        self._wake()

    def _on_compressed(self, data: bytes) -> None:
        """A read of a compressed body: a piece of it decoded now. The decoder holds the
        rest, and the socket is not read until that is decoded too: at once for a whole
        read, else as readany() asks for it."""
        assert self._decoder is not None
        self._add(self._decode(data))
        if self._decoder.holding:
            if self._whole:
                self._drain()
            else:
                self._connection.pause()
        self._wake()

    def _decode(self, data: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decompress(data)
        except zlib.error as exc:
            raise BrokenBody(f"cannot decompress the body: {exc}") from None

    def _add(self, piece: bytes) -> None:
        """A decoded piece joins the body, within the limits of what it may hold."""
        if piece:
            self._pending.append(piece)
            self._size += len(piece)
            if self._size > _HIGH_WATER:
                if self._whole:
                    self._check_whole_size()  # a piece at a time: it passes by one at most
                else:
                    self._connection.pause()

    def _drain(self) -> None:
        """A whole read takes the decoder's held input at once, a piece at a time, each
        checked against the body limit; then the socket is read again."""
        decoder = self._decoder
        while decoder is not None and decoder.holding:
            self._add(self._decode(b""))
        if self._all_in:
            self._end_decoded()

    def _decode_held(self) -> None:
        """The next piece of what the decoder holds, for readany(); at the end of it, the
        body's end if the message ended meanwhile, else the socket is read again."""
        assert self._decoder is not None
        try:
            self._add(self._decode(b""))
        except HttpError as exc:
            self._connection.close()
            self.set_exception(exc)
            return
        if not self._decoder.holding:
            if self._all_in:
                self._end_decoded()
            else:
                self._connection.resume()

    def _check_whole_size(self) -> None:
        """A body read whole is held whole: it may not pass the body limit (an error
        answer, a smaller one)."""
        limit = self._limits.max_body_bytes
        if self.status >= 300:
            limit = min(limit, _MAX_ERROR_BODY)
        if self._size > limit:
            raise TooLarge(f"response body larger than {limit} bytes")

    def on_message_complete(self) -> None:
        decoder = self._decoder
        if decoder is not None:
            if decoder.holding:
                self._all_in = True  # it ends once readany() has decoded what is held
                return
            self._end_decoded()
            return
        self._complete = True
        self._wake()

    def _end_decoded(self) -> None:
        """A compressed body is complete once all of it is decoded and it ended where its
        compressed stream did."""
        assert self._decoder is not None
        self._all_in = False
        try:
            tail = self._decoder.flush()
        except zlib.error as exc:
            self.set_exception(BrokenBody(f"cannot decompress the body: {exc}"))
            return
        if tail:
            self._pending.append(tail)
        if not self._decoder.ended():
            self.set_exception(BrokenBody("the compressed body ended part way through"))
            return
        self._complete = True
        self._wake()

    def on_lost(self, exc: BaseException | None) -> None:
        """The connection closed. A body delimited by a clean close is complete now."""
        if self._complete or self._exception is not None:
            return
        if self.head_done and self._close_delimited and exc is None:
            self.on_message_complete()
            return
        reason = f": {exc}" if exc is not None else ""
        if not self.head_done:
            message = f"the server closed the connection before answering{reason}"
            self.set_exception(Disconnected(message))
        else:
            self.set_exception(BrokenBody(f"the connection closed inside the body{reason}"))


_TIMEOUT = re.compile(r"(?:^|[,;\s])timeout\s*=\s*(\d{1,6})(?!\d)", re.IGNORECASE)


def _keep_alive_timeout(hint: str) -> float | None:
    """The `timeout=N` of a Keep-Alive header (RFC 2068 §19.7.1), in seconds; None when
    it says none."""
    found = _TIMEOUT.search(hint)
    return float(found.group(1)) if found is not None else None
