"""Server-sent events: just enough parsing to find event names and data payloads.

Comment lines (`: keep-alive`, `: OPENROUTER PROCESSING`) carry no data and are
skipped (provider-signals.md §9.3 item 3). Events end at a blank line, LF or CRLF, or
the two mixed (`\n\r\n`, `\r\n\n`): every function here finds the same ends. Each
such end holds `\n\n` or `\n\r\n` (after an optional CR), so an end is where one
of those two ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_EVENT_END = re.compile(rb"\r?\n\r?\n")
# Comment lines and blank lines where an event would start: no event, skipped in one
# match rather than an event at a time (an upstream may send nothing else for a while).
_NO_EVENT = re.compile(rb"(?::[^\n]*\n|\n)+")
_COMMENT_OR_BLANK = (ord(":"), ord("\n"))  # what such a run starts with


def events(buffer: bytes, start: int = 0) -> Iterator[tuple[bytes, bytes, int]]:
    """(event name, data payload, end offset) of each complete event with data."""
    if buffer.find(b"\r") >= 0:  # CRLF or mixed line ends: the general pattern
        while (match := _EVENT_END.search(buffer, start)) is not None:
            name, data = fields(buffer, start, match.start())
            start = match.end()
            if data is not None:
                yield name, data, start
        return
    length = len(buffer)
    while True:  # LF only: a plain search is faster
        if start < length and buffer[start] in _COMMENT_OR_BLANK:  # no regex call else
            skipped = _NO_EVENT.match(buffer, start)
            if skipped is not None:  # None: a comment whose line has not ended yet
                start = skipped.end()
        end = buffer.find(b"\n\n", start)
        if end < 0:
            return
        name, data = fields(buffer, start, end)
        start = end + 2
        if data is not None:
            yield name, data, start


def fields(buffer: bytes, start: int = 0, end: int | None = None) -> tuple[bytes, bytes | None]:
    """(event name, data payload) of the one event in `buffer[start:end]`; data is None
    when it has no `data:` line (a comment, a keep-alive)."""
    if end is None:
        end = len(buffer)
    if buffer.startswith(b"data:", start, end):
        # The usual event, one `data:` line and its LF end, read without splitting it
        # into lines: what the loop below would read from it, at a third of the cost.
        # After the line's LF, fewer than 5 bytes cannot hold another `data:` line.
        line_end = buffer.find(b"\n", start, end)
        if line_end < 0:
            line_end = end
        if end - line_end < 6 and buffer.find(b"\r", start, line_end) < 0:
            return b"", buffer[start + 5 : line_end].lstrip(b" ")
    name = b""
    data: list[bytes] = []
    for line in buffer[start:end].splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    if not data:
        return name, None
    return name, data[0] if len(data) == 1 else b"\n".join(data)


def complete_length(buffer: bytes) -> int:
    """How many leading bytes of `buffer` are whole events (the rest is carried over)."""
    cut = buffer.rfind(b"\n\n")
    end = cut + 2 if cut >= 0 else 0
    if buffer.find(b"\r") >= 0:
        cut = buffer.rfind(b"\n\r\n")
        if cut >= 0 and cut + 3 > end:
            end = cut + 3
    return end


def ends_after(buffer: bytes | bytearray, start: int) -> bool:
    """Whether an event ends in `buffer[start:]`: for a reader holding an event that has
    not ended, which looks only at what each read adds (and the 3 bytes before it), not
    again at everything held: an event sent a little at a time up to the limit on one
    event otherwise cost time in the square of its size."""
    return _EVENT_END.search(buffer, start) is not None


def event_around(buffer: bytes, position: int) -> tuple[int, int]:
    """(start, end) of the whole event holding byte `position` of `buffer`."""
    before = buffer.rfind(b"\n\n", 0, position)
    start = before + 2 if before >= 0 else 0
    after = buffer.find(b"\n\n", position)
    end = after + 2 if after >= 0 else len(buffer)
    if buffer.find(b"\r") >= 0:
        before = buffer.rfind(b"\n\r\n", 0, position)
        if before >= 0 and before + 3 > start:
            start = before + 3
        after = buffer.find(b"\n\r\n", position)
        if after >= 0 and after + 3 < end:
            end = after + 3
    return start, end
