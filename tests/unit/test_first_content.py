"""The shortcut that ends a stream's wait for its first content event from the bytes
alone (`content_end`) against the event-by-event reading it skips: wherever it answers,
that reading would have found a content event, in the same bytes, and no error."""

from __future__ import annotations

import json

import pytest

from router.errors import UpstreamProtocolError
from router.failover.first_event import read_first_event
from router.outcomes import Verdict
from router.wire import sse
from router.wire.dialects import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES, Dialect
from router.wire.redact import Redactor


def chat(delta: dict[str, object]) -> bytes:
    body = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


ROLE = chat({"role": "assistant", "content": ""})
HELLO = chat({"content": "Hello"})
TOOL = chat({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ""}}]})
CHAT_ERROR = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'


def anthropic(event: str, body: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(body)}\n\n".encode()


START = anthropic("message_start", {"type": "message_start", "message": {"usage": {}}})
BLOCK = anthropic("content_block_start", {"type": "content_block_start", "index": 0})
PING = anthropic("ping", {"type": "ping"})
DELTA = anthropic("content_block_delta", {"delta": {"type": "text_delta", "text": "Hi"}})
OVERLOADED = anthropic("error", {"type": "error", "error": {"type": "overloaded_error"}})


def read_one_by_one(dialect: Dialect, buffer: bytes) -> tuple[int, Verdict | None] | None:
    """What read_first_event's event-by-event reading decides: None while no content
    event is whole, else (where that event ends, its error verdict)."""
    for event, data, end in sse.events(buffer):
        if not dialect.is_preamble(event, data):
            return end, dialect.error(event, data)
    return None


CASES = [
    # (dialect, bytes, whether the shortcut answers)
    (OPENAI_CHAT, ROLE + HELLO, True),
    (OPENAI_CHAT, HELLO, True),
    (OPENAI_CHAT, ROLE + b": keep-alive\n\n" + HELLO, True),
    (OPENAI_CHAT, ROLE + chat({"content": "an error, fixed"}), True),
    (OPENAI_CHAT, ROLE + TOOL + HELLO, True),  # the tool call is content already
    (OPENAI_CHAT, ROLE, False),
    (OPENAI_CHAT, ROLE + HELLO[:-1], False),  # the text's event has not ended
    (OPENAI_CHAT, ROLE + CHAT_ERROR + HELLO, False),
    (OPENAI_CHAT, ROLE + HELLO + CHAT_ERROR, True),  # the error is the relay's to read
    (OPENAI_CHAT, ROLE + HELLO + HELLO.replace(b"\n", b"\r\n"), True),
    (OPENAI_CHAT, CHAT_ERROR, False),
    (OPENAI_CHAT, (ROLE + HELLO).replace(b"\n", b"\r\n"), False),
    (OPENAI_CHAT, b': {"content":"x"}\n\n' + ROLE, False),  # in a comment
    (OPENAI_CHAT, ROLE + HELLO.replace(b'"content":"', b'"content": "'), False),
    (OPENAI_CHAT, TOOL, False),  # content, but not text: read one by one
    (ANTHROPIC_MESSAGES, START + BLOCK + PING + DELTA, True),
    (ANTHROPIC_MESSAGES, START + BLOCK + DELTA + DELTA, True),
    (ANTHROPIC_MESSAGES, START + BLOCK + PING, False),
    (ANTHROPIC_MESSAGES, START + BLOCK + DELTA[:-1], False),
    (ANTHROPIC_MESSAGES, START + OVERLOADED + DELTA, False),
    (ANTHROPIC_MESSAGES, START + DELTA + OVERLOADED, True),
    (ANTHROPIC_MESSAGES, START + DELTA.replace(b"Hi", b"no error"), False),
    (ANTHROPIC_MESSAGES, START + DELTA.replace(b"event: ", b"event:"), False),
    (ANTHROPIC_MESSAGES, (START + DELTA).replace(b"\n", b"\r\n"), False),
    (ANTHROPIC_MESSAGES, START + b"event: content_block_delta\n\n" + BLOCK, False),  # no data
    (OPENAI_RESPONSES, b'event: response.output_text.delta\ndata: {"delta":"x"}\n\n', False),
]


@pytest.mark.parametrize(("dialect", "buffer", "answers"), CASES)
def test_the_shortcut_answers_only_what_reading_each_event_would(
    dialect: Dialect, buffer: bytes, answers: bool
) -> None:
    end = dialect.content_end(buffer, 0)
    assert (end >= 0) is answers
    if end >= 0:
        found = read_one_by_one(dialect, buffer)
        assert found is not None
        first_end, error = found
        assert error is None
        assert first_end <= end <= len(buffer)


def test_the_shortcut_looks_only_at_what_is_not_yet_read() -> None:
    # The role chunk was read in an earlier piece; the search starts after it.
    buffer = ROLE + HELLO
    assert OPENAI_CHAT.content_end(buffer, len(ROLE)) == len(buffer)
    assert OPENAI_CHAT.content_end(buffer, len(buffer)) == -1


class _Pieces:
    """An upstream response that hands read_first_event `pieces`, one a read."""

    route_id = "a/gpt-4o"

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = iter(pieces)

    async def next_chunk(self, timeout: float, phase: str = "idle") -> bytes:
        return next(self._pieces, b"")


async def test_pings_before_the_first_event_are_not_read_again_with_each_piece(monkeypatch):
    """An upstream that sends comments and pings before its first content event: each
    piece's are passed once, not read again as each later piece arrives (200 pieces of
    100 comments were 2 million event readings, seconds of the loop), and comments are
    not read one by one at all."""
    read: list[int] = []
    fields = sse.fields

    def counted(buffer: bytes, start: int = 0, end: int | None = None):
        read.append(start)
        return fields(buffer, start, end)

    monkeypatch.setattr(sse, "fields", counted)
    pieces = [b": ping\n\n" * 100 for _ in range(200)] + [ROLE + HELLO]
    buffer, data, error = await read_first_event(
        _Pieces(pieces), OPENAI_CHAT, 10.0, 1 << 20, Redactor()
    )
    assert (data, error) == (b"", None)
    assert buffer.endswith(ROLE + HELLO)
    assert len(read) <= 2  # the role chunk at most (the shortcut finds the text)


@pytest.mark.parametrize("size", [1, 5, 64, 1 << 16])
async def test_the_first_event_read_a_few_bytes_at_a_time_is_the_same(size: int) -> None:
    """Pings, a role chunk, then the text, in reads of `size` bytes: what comes back is
    every byte read, whatever the reads' size."""
    stream = b": ping\n\n" * 3 + ROLE + b"\r\n" + HELLO.replace(b"\n\n", b"\n\r\n")
    pieces = [stream[at : at + size] for at in range(0, len(stream), size)]
    buffer, _, error = await read_first_event(
        _Pieces(pieces), OPENAI_CHAT, 10.0, 1 << 20, Redactor()
    )
    assert error is None
    assert buffer == stream[: len(buffer)] and buffer.endswith(b"\n\r\n")


async def test_an_endless_first_event_in_small_reads_is_refused_at_the_limit() -> None:
    pieces = [b'data: {"x":"'] + [b"y" * 100] * 200
    with pytest.raises(UpstreamProtocolError, match="no content event in the first 10000"):
        await read_first_event(_Pieces(pieces), OPENAI_CHAT, 10.0, 10_000, Redactor())
