"""SSE framing and the OpenAI chat dialect's reading of events, on the bytes providers send.

The parsers take a plain-search path for LF-only text and a general one for CRLF or
mixed line ends; every case here runs through both and must read the same.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from router.outcomes import FailureClass
from router.wire import sse
from router.wire.dialects import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    UsagePart,
    next_sequence_number,
)
from router.wire.stream_watch import EventTooLarge
from router.wire.stream_watch import StreamWatch as _Watch
from router.wire.usage import Usage

STREAM = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    b'"finish_reason":null}],"usage":null}\n\n'
    b": keep-alive\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],'
    b'"usage":null}\n\n'
    b"event: note\ndata: line one\ndata: line two\n\n"
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,'
    b'"total_tokens":9}}\n\n'
    b"data: [DONE]\n\n"
)


def crlf(text: bytes) -> bytes:
    return text.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("form", [lambda b: b, crlf], ids=["lf", "crlf"])
def test_events_are_read_alike_with_either_line_end(form) -> None:
    text = form(STREAM)
    found = [(name, data) for name, data, _ in sse.events(text)]
    assert [name for name, _ in found] == [b"", b"", b"note", b"", b""]
    assert found[2][1] == b"line one\nline two"
    assert found[4][1] == b"[DONE]"
    ends = [end for _, _, end in sse.events(text)]
    assert ends[-1] == len(text)  # the last event ends the buffer exactly


@pytest.mark.parametrize("form", [lambda b: b, crlf], ids=["lf", "crlf"])
def test_a_partial_event_is_not_complete(form) -> None:
    text = form(STREAM)
    cut = len(text) - 5  # inside the [DONE] event
    assert sse.complete_length(text[:cut]) == text.rfind(form(b"data: [DONE]"))
    assert list(sse.events(text[:cut]))[-1][1].startswith(b'{"id":"c1","choices":[]')
    assert sse.complete_length(form(b"data: {")) == 0


def test_mixed_line_ends_still_end_events() -> None:
    text = b"data: a\n\r\ndata: b\r\n\ndata: c\n\n"
    assert [data for _, data, _ in sse.events(text)] == [b"a", b"b", b"c"]


@pytest.mark.parametrize("form", [lambda b: b, crlf], ids=["lf", "crlf"])
def test_event_around_finds_the_whole_event(form) -> None:
    text = form(STREAM)
    at = text.find(b'"prompt_tokens"')
    start, end = sse.event_around(text, at)
    assert text[start:end].startswith(b'data: {"id":"c1","choices":[]')
    assert text[start:end].endswith(form(b"}}\n\n"))
    # The first event has no blank line before it; the last runs to the end.
    assert sse.event_around(text, 3)[0] == 0
    assert sse.event_around(text, len(text) - 3)[1] == len(text)
    assert sse.event_around(b"data: open", 2) == (0, len(b"data: open"))


def test_fields_of_a_comment_have_no_data() -> None:
    assert sse.fields(b": keep-alive\n\n") == (b"", None)
    assert sse.fields(b"event: ping\ndata:\n\n") == (b"ping", b"")


def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    body = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return json.dumps({**body, **extra}, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "preamble"),
    [
        (chunk({"role": "assistant", "content": ""}), True),
        (chunk({"role": "assistant", "content": "", "refusal": None}), True),
        (chunk({"role": "assistant"}), True),
        (chunk({"role": "assistant", "content": ""}, usage=None), True),
        (chunk({"role": "assistant", "content": ""}, finish="stop"), False),
        (
            b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"finish_reason":null},{"index":1,"delta":{"content":"x"},"finish_reason":null}]}',
            False,  # one choice already has text
        ),
        (chunk({"content": "Hi"}), False),
        (chunk({"content": '"quoted"'}), False),
        (chunk({"content": ""}, finish="stop"), False),
        (chunk({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}), False),
        (chunk({"role": "assistant", "content": ""}, usage={"prompt_tokens": 1}), False),
        (b'{"error":{"message":"overloaded","type":"server_error"}}', False),
        # A role chunk whose text mentions "content":"x" inside a string stays preamble.
        (chunk({"role": "assistant", "content": ""}, note='say "content":"x"'), True),
    ],
)
def test_openai_preamble_is_only_the_role_chunk(data: bytes, preamble: bool) -> None:
    assert OPENAI_CHAT.is_preamble(b"", data) is preamble


def test_openai_usage_is_read_from_the_usage_chunk_only() -> None:
    usage_chunk = b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}'
    assert OPENAI_CHAT.usage(b"", usage_chunk) == UsagePart(7, 2)
    assert OPENAI_CHAT.usage(b"", chunk({"content": "Hi"}, usage=None)) is None
    spaced = b'{"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 7}}'
    assert OPENAI_CHAT.usage(b"", spaced) == UsagePart(7, 2)


@pytest.mark.parametrize("form", [lambda b: b, crlf], ids=["lf", "crlf"])
@pytest.mark.parametrize("split", [1, 40, 200, len(STREAM) - 3])
def test_the_usage_chunk_is_kept_from_the_client_however_the_stream_is_cut(form, split) -> None:
    text = form(STREAM)
    watch = _Watch(OPENAI_CHAT, 1 << 20)
    out = watch.without_usage(text[:split]) + watch.without_usage(text[split:]) + watch.rest()
    assert b"prompt_tokens" not in out
    assert out == text.replace(
        form(b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,')
        + b'"total_tokens":9}}'
        + form(b"\n\n"),
        b"",
    )
    end = watch.end()
    assert watch.done
    assert end.usage is not None and (end.usage.input_tokens, end.usage.output_tokens) == (7, 2)


def test_with_usage_in_every_chunk_the_final_usage_chunk_is_kept_and_counted() -> None:
    """vLLM's `continuous_usage_stats` puts running counts in every chunk; the client did
    not ask for the final usage-only chunk, and its counts are the ones that hold."""
    running = b'"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}'
    final = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
    text = (
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],' + running + b"}\n\n"
        + final
        + b"data: [DONE]\n\n"
    )  # fmt: skip
    watch = _Watch(OPENAI_CHAT, 1 << 20)
    out = watch.without_usage(text) + watch.rest()
    assert out == text.replace(final, b"")
    end = watch.end()
    assert end.usage is not None and (end.usage.input_tokens, end.usage.output_tokens) == (7, 3)


def test_running_counts_in_a_piece_of_their_own_are_read_when_no_final_chunk_comes() -> None:
    running = b'"usage":{"prompt_tokens":7,"completion_tokens":%d,"total_tokens":%d}'
    watch = _Watch(OPENAI_CHAT, 1 << 20)
    for n in (1, 2):
        piece = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],%s}\n\n' % (
            running % (n, 7 + n)
        )
        assert watch.without_usage(piece) == piece  # not usage-only: passed on, and read
    assert watch.without_usage(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    end = watch.end()
    assert end.usage is not None and (end.usage.input_tokens, end.usage.output_tokens) == (7, 2)


def test_the_final_usage_chunk_in_a_piece_of_its_own_holds_over_running_counts() -> None:
    """The usage chunk the router asked for is cut out and its counts (cache reads too)
    are the stream's, whatever running counts earlier pieces carried."""
    running = b'"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}'
    piece = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],%s}\n\n' % running
    final = (
        b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,'
        b'"total_tokens":13,"prompt_tokens_details":{"cached_tokens":5}}}\n\n'
    )
    watch = _Watch(OPENAI_CHAT, 1 << 20)
    assert watch.without_usage(piece) == piece
    assert watch.without_usage(final) == b""
    assert watch.without_usage(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert watch.end().usage == Usage(9, 4, cached_tokens=5)


def test_a_client_gone_after_the_terminator_was_seen_but_not_written_was_not_served() -> None:
    watch = _Watch(OPENAI_CHAT, 1 << 20)
    watch.see(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n')
    assert watch.done and not watch.delivered
    assert watch.end(client_gone=True).client_gone  # the write of [DONE] never returned
    watch.delivered = True  # what the relay says once that write has returned
    end = watch.end(client_gone=True)
    assert not end.client_gone and end.verdict.failure is FailureClass.OK


@pytest.mark.parametrize("split", [1, 30, 100, len(STREAM) - 3])
def test_only_whole_events_go_on_and_the_rest_waits(split: int) -> None:
    watch = _Watch(OPENAI_CHAT, 1 << 20)
    first = watch.see(STREAM[:split])
    assert sse.complete_length(first) == len(first)  # never half an event
    assert first + watch.rest() == STREAM[:split]
    assert first + watch.see(STREAM[split:]) == STREAM and watch.rest() == b""
    assert watch.done


MIXED = crlf(STREAM[:120]) + STREAM[120:]  # CRLF events, then LF ones (a proxy's splice)


@pytest.mark.parametrize("text", [STREAM, crlf(STREAM), MIXED], ids=["lf", "crlf", "mixed"])
def test_every_cut_passes_on_exactly_the_whole_events(text: bytes) -> None:
    """A read that ends with a blank line is taken whole without the general search:
    cut anywhere, what goes on is what the general search says is whole, the rest waits,
    and the two reads give back the stream."""
    for split in range(1, len(text)):
        for strip in (False, True):
            watch = _Watch(OPENAI_CHAT, 1 << 20)
            read = watch.without_usage if strip else watch.see
            first = read(text[:split])
            if not strip:
                assert first == text[: sse.complete_length(text[:split])], split
            assert sse.complete_length(first) == len(first), split
            second = read(text[split:])
            assert watch.done and watch.rest() == b"", split
            if not strip:
                assert first + second == text, split


@pytest.mark.parametrize("strip", [False, True])
def test_an_event_that_outgrows_the_limit_is_refused(strip: bool) -> None:

    watch = _Watch(OPENAI_CHAT, 1000)
    read = watch.without_usage if strip else watch.see
    assert read(b'data: {"a":"' + b"x" * 900) == b""  # held: it may still end in time
    with pytest.raises(EventTooLarge, match="1000 bytes") as caught:
        read(b"x" * 200)
    assert caught.value.complete == b""
    with pytest.raises(EventTooLarge) as caught:  # whole events before it still go on
        read(b'data: {"b":1}\n\ndata: ' + b"x" * 1000)
    assert caught.value.complete == b'data: {"b":1}\n\n'
    assert watch.rest() == b""  # nothing of it is kept


def test_the_routers_responses_error_event_numbers_itself_after_the_last_event() -> None:
    last = b'event: a\ndata: {"sequence_number":7}\n\nevent: b\ndata: {"sequence_number": 12}\n\n'
    assert next_sequence_number(last) == 13
    assert next_sequence_number(b"") == 0
    assert next_sequence_number(b'data: {"sequence_number":"x"}\n\n') == 0


def _fields_line_by_line(event: bytes) -> tuple[bytes, bytes | None]:
    """The reading of the SSE spec's rules that fields() must give, one line at a time."""
    name, data = b"", []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, (None if not data else b"\n".join(data))


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"choices":[]}',
        b'data:{"a":1}\n\n',
        b"data:",
        b"event: ping",
        b"event: message_start\ndata: {}\n\n",
        b": keep-alive",
        b"data: a\r\n",
        b"data: a\rdata: b",
        b"data: one\ndata: two\n\n",
        b"id: 7",
        b"",
    ],
)
def test_fields_reads_one_line_events_as_the_line_by_line_rules_do(event: bytes) -> None:
    assert sse.fields(event) == _fields_line_by_line(event)
    framed = b"x\n\n" + event + b"\n\nrest"
    assert sse.fields(framed, 3, 3 + len(event)) == _fields_line_by_line(event)


_EVENT_PARTS = [
    b"data:", b"data: ", b"event:", b"event: x", b" ", b"x", b"{}", b"\n", b"\r", b"\r\n", b"data",
]  # fmt: skip


def test_fields_reads_any_span_as_the_line_by_line_rules_do() -> None:
    """The one-line shortcut in fields() gives what the general reading gives, for any
    span of any buffer: LF and CR anywhere, spans cut inside lines or at their ends."""
    rng = random.Random(15)
    shortcut = 0
    for _ in range(20_000):
        head = b"".join(rng.choice(_EVENT_PARTS) for _ in range(rng.randint(0, 3)))
        tail = b"".join(rng.choice(_EVENT_PARTS) for _ in range(rng.randint(0, 5)))
        buffer = head + rng.choice((b"", b"data:", b"data: ")) + tail
        start = len(head) if rng.random() < 0.5 else rng.randint(0, len(buffer))
        end = rng.randint(start, len(buffer))
        span = buffer[start:end]
        assert sse.fields(buffer, start, end) == _fields_line_by_line(span), (buffer, start, end)
        assert sse.fields(span) == _fields_line_by_line(span)
        shortcut += span.startswith(b"data:") and b"\r" not in span and span.count(b"\n") <= 2
    assert shortcut > 1_000


@pytest.mark.parametrize(
    ("buffer", "found"),
    [
        (b": ping\n\n: pi", []),  # a comment whose line has not ended yet
        (b": ping\n\n:", []),
        (b"\n\n\n", []),
        (b": a\n\n: b\ndata: x\n\n: c", [(b"", b"x")]),  # a comment line before the data
        (b"data: a\n\n\n\n: c\ndata: b\n\n", [(b"", b"a"), (b"", b"b")]),
    ],
)
def test_comments_and_blank_lines_where_an_event_starts_are_no_event(buffer, found):
    assert [(name, data) for name, data, _ in sse.events(buffer)] == found
    crlf = buffer.replace(b"\n", b"\r\n")
    assert [(name, data) for name, data, _ in sse.events(crlf)] == found


# Every mix of line ends the SSE format allows: LF then a CRLF blank line, and back.
MIXED_ENDS = b"data: a\n\r\ndata: b\r\n\n: ping\r\n\r\ndata: c\n\nevent: x\r\ndata: d\n\r\n"


@pytest.mark.parametrize("text", [STREAM, crlf(STREAM), MIXED, MIXED_ENDS],
                         ids=["lf", "crlf", "mixed", "mixed-ends"])  # fmt: skip
def test_every_reader_finds_the_same_event_ends(text: bytes) -> None:
    """events(), complete_length() and event_around() agree on where events end, for
    any line ends: a relay that held an event events() had ended held it for good, and
    ended the stream as unfinished."""
    ends = [0, *(match.end() for match in sse._EVENT_END.finditer(text))]
    assert ends[-1] == len(text)
    for cut in range(len(text) + 1):
        whole = max(end for end in ends if end <= cut)
        assert sse.complete_length(text[:cut]) == whole, cut
    for start, end in itertools.pairwise(ends):
        assert sse.event_around(text, start + 1) == (start, end), start


@pytest.mark.parametrize("text", [STREAM, crlf(STREAM), MIXED, MIXED_ENDS],
                         ids=["lf", "crlf", "mixed", "mixed-ends"])  # fmt: skip
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_a_stream_in_many_small_reads_goes_on_whole_and_in_order(text: bytes, size: int) -> None:
    """Read a few bytes at a time, an event held over many reads goes on once its end
    came, wherever a read cut that end."""
    for strip in (False, True):
        watch = _Watch(OPENAI_CHAT, 1 << 20)
        read = watch.without_usage if strip else watch.see
        out = b""
        for at in range(0, len(text), size):
            piece = read(text[at : at + size])
            assert sse.complete_length(piece) == len(piece), at
            out += piece
        assert watch.rest() == b""
        if not strip:
            assert out == text
        elif text is not MIXED_ENDS:
            assert b'"prompt_tokens"' not in out and watch.done


# A model explaining SSE writes its markers in its text; JSON carries them unescaped.
EXPLAINING = {
    "openai": (
        OPENAI_CHAT,
        b'data: {"choices":[{"index":0,"delta":{"content":"ends with data: [DONE]\\n\\n so"}}]}'
        b"\n\n",
        b"data: [DONE]\n\n",
    ),
    "anthropic": (
        ANTHROPIC_MESSAGES,
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        b'{"type":"text_delta","text":"then event: message_stop\\n comes"}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ),
    "responses": (
        OPENAI_RESPONSES,
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"last is event: response.completed\\n","sequence_number":4}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
        b'{"input_tokens":3,"output_tokens":5}},"sequence_number":5}\n\n',
    ),
}


@pytest.mark.parametrize("form", [lambda b: b, crlf], ids=["lf", "crlf"])
@pytest.mark.parametrize("dialect", list(EXPLAINING))
def test_a_terminator_in_an_events_text_does_not_end_the_stream(dialect, form) -> None:
    """Before, the bytes anywhere ended it: the relay then waited 2 s for the body's end
    and closed the stream as served, the rest of the answer and its usage never sent."""
    chosen, text, last = EXPLAINING[dialect]
    watch = _Watch(chosen, 1 << 20)
    watch.see(form(text))
    assert not watch.done
    watch.see(form(text) + form(last))  # the real one, after more text in the same read
    assert watch.done


def test_a_responses_stream_cut_short_by_its_token_limit_ends_as_asked() -> None:
    """`response.incomplete` (max_output_tokens reached, a content filter) is the answer
    the caller asked for: the stream's end, with the usage it carries."""
    watch = _Watch(OPENAI_RESPONSES, 1 << 20)
    watch.see(
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"Hi","sequence_number":3}\n\n'
        b'event: response.incomplete\ndata: {"type":"response.incomplete","response":'
        b'{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},'
        b'"usage":{"input_tokens":10,"output_tokens":16}},"sequence_number":4}\n\n'
    )
    assert watch.done and watch.error is None
    assert watch.end().usage == Usage(10, 16)
