"""What a relay learns from the SSE bytes it forwards: an error event, usage, the end.

Pure byte-level reading of the client's stream format (the dialect says which events
are errors, usage and the terminator); no I/O. The relay feeds it every chunk it
forwards, and the open stream reads it when the stream ends, however it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.outcomes import Verdict
from router.rules.failures import OK
from router.wire import sse
from router.wire.dialects import Dialect, UsagePart
from router.wire.usage import Usage, usage_from_body, with_cache

# Of the events last passed on, kept whole past the stream's end up to this size.
_LAST_KEPT = 1 << 16


class EventTooLarge(ValueError):
    """An SSE event grew past the limit on one event without ending. `complete`: the
    whole events before it, still to be forwarded."""

    def __init__(self, message: str, complete: bytes) -> None:
        super().__init__(message)
        self.complete = complete


# Not frozen, though nothing changes it: one per stream (a frozen dataclass's __init__
# sets each field through object.__setattr__).
@dataclass(slots=True)
class StreamEnd:
    verdict: Verdict  # how the upstream stream ended
    client_gone: bool = False  # the client left before the terminator reached it
    usage: Usage | None = None  # when the stream reported it
    # Whether the end says anything of the route's health: not when the router's own
    # bound on a stream's length (timeouts.stream) ended it, however healthy the route.
    judged: bool = True


class StreamWatch:
    """What the relay learns from the bytes it forwards: an error event, usage, and
    whether the terminator came.

    Only whole events go on to the client: the start of an event split over chunks is
    held until its end comes, up to `max_event` bytes. So a stream that breaks can
    always end with a well-formed error event, never one glued to half of another.
    """

    __slots__ = (
        "_cached",
        "_carry",
        "_dialect",
        "_final",
        "_input",
        "_max_event",
        "_output",
        "_written",
        "delivered",
        "done",
        "error",
        "hinted",
        "last",
    )

    def __init__(self, dialect: Dialect, max_event: int) -> None:
        self._dialect = dialect
        self._max_event = max_event
        # The start of an event that has not ended, held until it does.
        self._carry = bytearray()
        self._input: int | None = None
        self._output: int | None = None
        self._cached: int | None = None
        self._written: int | None = None
        self._final: Usage | None = None  # read from the usage chunk the router asked for
        self.done = False  # the terminator was seen
        self.delivered = False  # ... and written to the client (the relay says so)
        self.error: Verdict | None = None
        # Whether the whole events last passed on name the dialect's error hint: the
        # relay's redaction need not search them for it again.
        self.hinted = False
        # The whole events last passed on (read: they go to the client), for the
        # router's error event to number itself after them.
        self.last = b""

    def see(self, chunk: bytes) -> bytes:
        """The whole events of carry + chunk, to forward as they are; a partial event
        waits for the next chunk. Raises EventTooLarge when that wait passes the limit."""
        if self._carry:
            complete = self._held(chunk)
        elif chunk.endswith(b"\n\n"):  # whole events, as a read nearly always brings
            complete = chunk
        else:
            complete = self._cut(chunk)
        self._inspect(complete, True)
        if complete:
            self.last = complete
        return complete

    def without_usage(self, chunk: bytes) -> bytes:
        """As `see`, less the usage chunk the router asked for on the client's behalf."""
        if self._carry:
            complete = self._held(chunk)
        elif chunk.endswith(b"\n\n"):  # whole events, as a read nearly always brings
            complete = chunk
        else:
            complete = self._cut(chunk)
        # The usage chunk comes last before the terminator, and after any running counts
        # (vLLM's continuous_usage_stats): search from the end.
        at = complete.rfind(b'"prompt_tokens"')
        if at >= 0:
            start, end = sse.event_around(complete, at)
            event, data = sse.fields(complete, start, end)
            if data is not None and _usage_only(data):
                # Read here: it is not in what the client gets. Its counts are the
                # stream's, whatever running counts came before (vLLM's).
                if self.error is None:
                    self.error = self._dialect.error(event, data)
                self._final = usage_from_body(data) or self._final
                complete = complete[:start] + complete[end:]
                self._inspect(complete, False)
                self.last = complete or self.last
                return complete
        # No count in these events (the usual piece): no second search for one.
        self._inspect(complete, at >= 0)
        self.last = complete or self.last
        return complete

    def _held(self, chunk: bytes) -> bytes:
        """The whole events of what is held and `chunk`. Only the new bytes (and the 3
        before them: an end split over reads) can end the event held: while none does,
        `chunk` is added to it and nothing else is searched or copied."""
        carry = self._carry
        seen = len(carry)
        carry += chunk
        if not sse.ends_after(carry, seen - 3 if seen > 3 else 0):
            if len(carry) > self._max_event:
                self._too_large(b"")
            return b""
        window = bytes(carry)
        carry.clear()
        return self._cut(window)

    def _cut(self, window: bytes) -> bytes:
        """The whole events of `window`; the rest is held, up to the limit on one event."""
        cut = sse.complete_length(window)
        if cut == len(window):
            return window
        complete = window[:cut]
        self._carry += memoryview(window)[cut:]
        if len(self._carry) > self._max_event:
            self._inspect(complete, True)
            self._too_large(complete)
        return complete

    def rest(self) -> bytes:
        """What is held of an event that has not ended (the stream's last bytes, at its end)."""
        return bytes(self._carry)

    def _too_large(self, complete: bytes) -> None:
        self._carry.clear()
        self.last = complete or self.last  # still to be sent, before the error event
        message = f"an SSE event passed {self._max_event} bytes without ending"
        raise EventTooLarge(message, complete)

    def _inspect(self, complete: bytes, usage: bool) -> None:
        """Read only the events a cheap search points at: errors, usage, the end.

        A fast stream can arrive whole in one read; parsing each of its events would
        cost more than everything else the relay does.
        """
        dialect = self._dialect
        at = complete.find(dialect.error_hint)
        self.hinted = at >= 0
        if at >= 0:
            self._read_from(complete, dialect.error_hint, at, usage)
        if usage and (at := complete.find(dialect.usage_hint)) >= 0:
            self._read_from(complete, dialect.usage_hint, at, usage)
        # The stream's last event: searched from the end, and read only when it may be
        # there (the search is all most pieces cost).
        at = complete.rfind(dialect.terminator)
        if at >= 0 and dialect.ends(complete, at):
            self.done = True

    def _read_from(self, complete: bytes, hint: bytes, at: int, usage: bool) -> None:
        """Read each event of `complete` that holds `hint`, from the one at `at` on."""
        while at >= 0:
            start, end = sse.event_around(complete, at)
            event, data = sse.fields(complete, start, end)
            if data is not None:
                self._read(event, data, usage=usage)
            at = complete.find(hint, end)

    def _read(self, event: bytes, data: bytes, *, usage: bool = True) -> None:
        if self.error is None:
            self.error = self._dialect.error(event, data)
        if not usage:
            return
        part: UsagePart | None = self._dialect.usage(event, data)
        if part is not None:
            self._input = part.input_tokens if part.input_tokens is not None else self._input
            self._output = part.output_tokens if part.output_tokens is not None else self._output
            if part.cached_tokens is not None:
                self._cached = part.cached_tokens
            if part.written_tokens is not None:
                self._written = part.written_tokens

    def _usage(self) -> Usage:
        """The counts seen, cache counts in or outside the input as the dialect has them."""
        inputs, outputs = self._input or 0, self._output
        if self._dialect.cache_outside_input:
            return with_cache(inputs, outputs, read=self._cached, creation=self._written,
                              outside=True)  # fmt: skip
        return with_cache(inputs, outputs, self._cached, self._written, outside=False)

    def let_go(self) -> None:
        """The stream is over: an event that never ended goes, and of the events last
        passed on, only the last stays (an error event numbers itself after it). A
        stream the client left may be held by a cycle until the garbage collector runs,
        and these were up to `max_event` bytes, and a read's worth of events."""
        if self._carry:
            self._carry = bytearray()
        last = self.last
        if len(last) > _LAST_KEPT:
            # The end of the event before the last, LF or CRLF framed (sse.py); none:
            # one event, kept whole.
            lf = last.rfind(b"\n\n", 0, len(last) - 2)
            crlf = last.rfind(b"\n\r\n", 0, len(last) - 3)
            end = max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)
            if end:
                self.last = last[end:]

    def end(self, verdict: Verdict = OK, *, client_gone: bool = False) -> StreamEnd:
        """How the stream ended. A client that leaves after the terminator was written
        to it was served in full: that is an ordinary end, not a client gone."""
        if client_gone:
            verdict = self.error or verdict  # an error event the client saw still counts
            client_gone = not self.delivered
        usage = self._final
        if usage is None and (self._input is not None or self._output is not None):
            usage = self._usage()
        return StreamEnd(verdict, client_gone, usage)  # positional: see failover.call.Answer


def _usage_only(data: bytes) -> bool:
    """OpenAI's usage chunk: `choices` empty, `usage` set (§9.1)."""
    return data.find(b'"prompt_tokens"') >= 0 and (
        data.find(b'"choices":[]') >= 0 or data.find(b'"choices": []') >= 0
    )
