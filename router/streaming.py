"""SSE relay: the first content event under a deadline, then the commit, then a byte pipe.

A streaming attempt ends at the first event with content (the dialect says which events
are only preamble). Until it is in hand nothing has gone to the client, so an error, a
cut or a silent upstream fails over. Once it is in hand `prepare()` sends status and
headers: the commit point. After that an upstream failure ends the stream with an error
event in the client's dialect, never a fake terminator (provider-signals.md §9.3).
Bytes are forwarded as they arrive, untouched; the relay only watches them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from router import sse
from router.classify import OK, classify_exception
from router.dialects import Dialect, UsagePart
from router.errors import UpstreamError, UpstreamProtocolError
from router.types import FailureClass, Verdict
from router.upstream import UpstreamResponse
from router.usage import Usage

_CARRY_LIMIT = 1 << 16  # an event split over chunks is kept this far, no further


@dataclass(frozen=True, slots=True)
class StreamEnd:
    verdict: Verdict  # how the upstream stream ended
    client_gone: bool = False
    usage: Usage | None = None  # when the stream reported it


@dataclass(frozen=True, slots=True)
class FirstEvent:
    buffer: bytes  # every byte read so far, to be sent first
    data: bytes  # the first content event's payload
    error: Verdict | None  # set when that event is an error


async def read_first_event(
    response: UpstreamResponse, dialect: Dialect, timeout: float
) -> FirstEvent:
    """Read until the first event with content, within `timeout` seconds.

    Raises UpstreamProtocolError when the stream ends before one, and UpstreamTimeout
    (via `next_chunk`) when the deadline passes first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buffer = b""
    scanned = 0
    while True:
        chunk = await response.next_chunk(max(deadline - loop.time(), 0.0), phase="first_byte")
        if not chunk:
            raise UpstreamProtocolError(response.route_id, "stream ended before its first event")
        buffer += chunk
        for event, data, end in sse.events(buffer, scanned):
            scanned = end
            if not dialect.is_preamble(event, data):
                return FirstEvent(buffer, data, dialect.error(event, data))


class _Watch:
    """What the relay learns from the bytes it forwards: an error event, usage, and
    whether the terminator came. Events split over chunks are carried over."""

    __slots__ = ("_carry", "_dialect", "_input", "_output", "done", "error")

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._carry = b""
        self._input: int | None = None
        self._output: int | None = None
        self.done = False
        self.error: Verdict | None = None

    def see(self, chunk: bytes) -> None:
        """Watch a chunk that is forwarded as it is."""
        window = self._carry + chunk if self._carry else chunk
        cut = sse.complete_length(window)  # whole events; the rest waits for the next chunk
        self._inspect(window[:cut] if cut < len(window) else window)
        self._carry = window[cut:][-_CARRY_LIMIT:]

    def without_usage(self, chunk: bytes) -> bytes:
        """The whole events of carry + chunk, less the usage chunk the router asked for
        on the client's behalf; a partial event waits for the next chunk."""
        window = self._carry + chunk if self._carry else chunk
        cut = sse.complete_length(window)
        complete, self._carry = window[:cut], window[cut:]
        # The usage chunk comes last before the terminator, and after any running counts
        # (vLLM's continuous_usage_stats): search from the end.
        at = complete.rfind(b'"prompt_tokens"')
        if at >= 0:
            start, end = sse.event_around(complete, at)
            event, data = sse.fields(complete, start, end)
            if data is not None and _usage_only(data):
                self._read(event, data)  # read here: it is not in what the client gets
                # Its counts are the final ones: earlier running counts must not replace them.
                complete = complete[:start] + complete[end:]
                self._inspect(complete, usage=False)
                return complete
        self._inspect(complete)
        return complete

    def rest(self) -> bytes:
        return self._carry

    def _inspect(self, complete: bytes, *, usage: bool = True) -> None:
        """Read only the events a cheap search points at: errors, usage, the end.

        A fast stream can arrive whole in one read; parsing each of its events would
        cost more than everything else the relay does.
        """
        dialect = self._dialect
        for hint in (dialect.error_hint, dialect.usage_hint) if usage else (dialect.error_hint,):
            at = complete.find(hint)
            while at >= 0:
                start, end = sse.event_around(complete, at)
                event, data = sse.fields(complete, start, end)
                if data is not None:
                    self._read(event, data, usage=usage)
                at = complete.find(hint, end)
        # The terminator ends the stream, so it is nearly always at the end: search back.
        if complete.rfind(dialect.terminator) >= 0:
            self.done = True

    def _read(self, event: bytes, data: bytes, *, usage: bool = True) -> None:
        if self.error is None:
            self.error = self._dialect.error(event, data)
        if not usage:
            return
        part: UsagePart | None = self._dialect.usage(event, data)
        if part is not None:
            self._input = part.input_tokens if part.input_tokens is not None else self._input
            self._output = part.output_tokens if part.output_tokens is not None else self._output

    def end(self, verdict: Verdict = OK, *, client_gone: bool = False) -> StreamEnd:
        usage = None
        if self._input is not None or self._output is not None:
            usage = Usage(input_tokens=self._input or 0, output_tokens=self._output or 0)
        return StreamEnd(verdict, client_gone=client_gone, usage=usage)


def _usage_only(data: bytes) -> bool:
    """OpenAI's usage chunk: `choices` empty, `usage` set (§9.1)."""
    return b'"prompt_tokens"' in data and (b'"choices":[]' in data or b'"choices": []' in data)


async def relay(
    response: UpstreamResponse,
    client: web.StreamResponse,
    first: bytes,
    dialect: Dialect,
    idle: float,
    *,
    strip_usage: bool = False,
) -> StreamEnd:
    """Pipe an upstream stream, from its buffered start, to a prepared client response.

    `strip_usage`: the router asked for a usage chunk the client did not; drop it.
    """
    watch = _Watch(dialect)
    chunk = first
    try:
        while chunk:
            if strip_usage:
                out = watch.without_usage(chunk)
            else:
                out = chunk
                watch.see(chunk)
            if watch.done and response.ended():
                # The terminator came with the end of the body: send the last events and
                # the end of the response in one write, not two.
                await client.write_eof(out + watch.rest() if strip_usage else out)
                break
            if out:
                await client.write(out)
            try:
                chunk = await response.next_chunk(idle)
            except UpstreamError as exc:
                tail = watch.rest() if strip_usage else b""  # otherwise already forwarded
                await client.write(
                    tail + dialect.error_event(f"upstream stream failed: {exc.message}")
                )
                return watch.end(classify_exception(exc))
        if watch.error is not None:
            return watch.end(watch.error)  # the client has already seen the provider's event
        if not watch.done:
            # §9.3.4: a stream with no terminator was truncated; say so, do not end quietly.
            tail = watch.rest() if strip_usage else b""
            await client.write(tail + dialect.error_event("upstream ended the stream unfinished"))
            return watch.end(
                Verdict(failure=FailureClass.SERVER_ERROR, message="stream ended unfinished")
            )
    except ConnectionResetError:
        return watch.end(client_gone=True)
    return watch.end()
