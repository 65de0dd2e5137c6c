"""Server-sent events: just enough parsing to find event names and data payloads.

Comment lines (`: keep-alive`, `: OPENROUTER PROCESSING`) carry no data and are
skipped (provider-signals.md §9.3 item 3). Events end at a blank line, LF or CRLF.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_EVENT_END = re.compile(rb"\r?\n\r?\n")


def events(buffer: bytes, start: int = 0) -> Iterator[tuple[bytes, bytes, int]]:
    """(event name, data payload, end offset) of each complete event with data."""
    while (match := _EVENT_END.search(buffer, start)) is not None:
        name = b""
        data: list[bytes] = []
        for line in buffer[start : match.start()].splitlines():
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                name = line[6:].strip()
        start = match.end()
        if data:
            yield name, b"\n".join(data), start


def complete_length(buffer: bytes) -> int:
    """How many leading bytes of `buffer` are whole events (the rest is carried over)."""
    cut = max(buffer.rfind(b"\n\n"), buffer.rfind(b"\r\n\r\n"))
    if cut < 0:
        return 0
    return cut + (4 if buffer.startswith(b"\r\n\r\n", cut) else 2)


def event_around(buffer: bytes, position: int) -> tuple[int, int]:
    """(start, end) of the whole event holding byte `position` of `buffer`."""
    before = max(buffer.rfind(b"\n\n", 0, position), buffer.rfind(b"\r\n\r\n", 0, position))
    start = 0 if before < 0 else before + (4 if buffer.startswith(b"\r\n\r\n", before) else 2)
    ends = [
        i for i in (buffer.find(b"\n\n", position), buffer.find(b"\r\n\r\n", position)) if i >= 0
    ]
    if not ends:
        return start, len(buffer)
    end = min(ends)
    return start, end + (4 if buffer.startswith(b"\r\n\r\n", end) else 2)
