"""What a provider's answer may make the router hold on the translated path, bounded as
the router's own client bounds it (`router.types.Limits`).

litellm reads answers with httpx, which holds a whole answer (litellm's `aread()`),
a whole SSE line (`aiter_lines()`), and all a compressed body inflates to, with no limit:
a provider, or a proxy or gateway in front of one, that sends an endless answer, an
endless line or a gzip bomb would grow the process until the kernel or the pod's memory
limit killed it, and every request in flight with it. Every httpx client litellm sends
with has its transport wrapped here (runtime.py patches litellm's own; egress.py's are
built wrapped), so that, as on the passthrough:

- an answer may hold at most `max_body_bytes`, decoded;
- an SSE stream's line at most `max_event_bytes` (a line is never longer than its event,
  and litellm reads a stream line by line);
- a compressed answer is inflated here, by the router's bounded decoder (inflate.py),
  never by httpx's unbounded ones: gzip and deflate are asked for, and an answer in any
  other coding is refused.

Past a limit the read fails with `AnswerTooLarge`, an `httpx.RemoteProtocolError`, so
litellm and the router take it as a broken answer from the provider (litellm_errors.py):
the request fails over, or a stream that began ends with an error event. Imported only
once litellm is (it needs httpx).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from router.types import Limits
from router.upstream.http_errors import HttpError
from router.upstream.inflate import Decoder
from router.upstream.translate import answer_limits

_ACCEPTED = "gzip, deflate"  # the codings inflate.py decodes
_IDENTITY = frozenset({"", "identity"})


class AnswerTooLarge(httpx.RemoteProtocolError):
    """A translated answer passed one of the limits on what it may hold."""


class BoundedTransport(httpx.AsyncBaseTransport):
    """`inner`, whose answers are bounded by the process's limits (answer_limits.py),
    read at each request: litellm keeps its clients across the apps a process runs."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limits = answer_limits.current()
        request.headers["Accept-Encoding"] = _ACCEPTED
        response = await self.inner.handle_async_request(request)
        coding = response.headers.get("content-encoding", "").strip().lower()
        if coding not in _IDENTITY and coding not in ("gzip", "deflate"):
            await response.aclose()
            raise AnswerTooLarge(f"the answer is in a coding the router did not ask for: {coding}")
        headers = response.headers
        decoder = None
        if coding not in _IDENTITY:
            # Inflated here, bounded: httpx must not inflate it again.
            decoder = Decoder(coding, limits.max_inflate_ratio)
            headers = httpx.Headers(
                [(k, v) for k, v in headers.multi_items()
                 if k.lower() not in ("content-encoding", "content-length")]
            )  # fmt: skip
        events = "text/event-stream" in headers.get("content-type", "")
        stream = _BoundedStream(response.stream, limits, decoder, events=events)
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=stream,
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def bounded_client(client: httpx.AsyncClient) -> None:
    """Wrap the transports `client` sends with (its own, and a proxy mount's), once."""
    transport = client._transport
    if not isinstance(transport, BoundedTransport):
        client._transport = BoundedTransport(transport)
    mounts = client._mounts
    for pattern, mounted in mounts.items():
        if mounted is not None and not isinstance(mounted, BoundedTransport):
            mounts[pattern] = BoundedTransport(mounted)


class _BoundedStream(httpx.AsyncByteStream):
    """An answer's bytes, decoded when compressed, within the limits."""

    def __init__(
        self, inner: Any, limits: Limits, decoder: Decoder | None, *, events: bool
    ) -> None:
        self._inner = inner
        self._decoder = decoder
        # A stream's longest line, or a whole answer's size.
        self._limit = limits.max_event_bytes if events else limits.max_body_bytes
        self._events = events
        self._run = 0  # bytes of the line not ended yet, or of the answer so far

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = self._decoder
        async for chunk in self._inner:
            if decoder is None:
                if chunk:
                    self._count(chunk)
                    yield chunk
                continue
            # Inflated a piece (inflate.py) at a time, each counted before the next.
            piece: bytes | None = self._inflate(chunk)
            while piece is not None:
                if piece:
                    self._count(piece)
                    yield piece
                piece = self._inflate(b"") if decoder.holding else None
        if decoder is not None:
            tail = self._finish()
            if tail:
                self._count(tail)
                yield tail

    def _inflate(self, data: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decompress(data)
        except (HttpError, zlib.error) as exc:
            raise AnswerTooLarge(f"the compressed answer is broken or too large: {exc}") from None

    def _finish(self) -> bytes:
        decoder = self._decoder
        assert decoder is not None
        try:
            tail = decoder.flush()
        except zlib.error as exc:
            raise AnswerTooLarge(f"the compressed answer is broken: {exc}") from None
        if not decoder.ended():
            raise AnswerTooLarge("the compressed answer ended part way through")
        return tail

    def _count(self, piece: bytes) -> None:
        if self._events:
            end = max(piece.rfind(b"\n"), piece.rfind(b"\r"))  # SSE ends lines either way
            self._run = self._run + len(piece) if end < 0 else len(piece) - end - 1
            if self._run > self._limit:
                raise AnswerTooLarge(
                    f"an SSE line passed {self._limit} bytes without ending "
                    "(limits.max_event_bytes)"
                )
            return
        self._run += len(piece)
        if self._run > self._limit:
            raise AnswerTooLarge(
                f"the answer is larger than {self._limit} bytes (limits.max_body_bytes)"
            )

    async def aclose(self) -> None:
        await self._inner.aclose()
