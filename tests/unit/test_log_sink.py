"""The log sink over a real pipe: lines in order, a reader that stops or leaves costs the
writer nothing but the lines it drops, and says so."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time

import pytest

from router.telemetry.log_sink import LogSink
from router.telemetry.logs import JSONLines, RequestLog
from router.wire.redact import Redactor

LINE = b'{"event":"request","n":%d,"pad":"' + b"x" * 200 + b'"}\n'


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_until(fd: int, marker: bytes, seconds: float = 10.0) -> bytes:
    """What the pipe gives until `marker` has come (at most `seconds`)."""
    os.set_blocking(fd, False)
    data, deadline = b"", time.monotonic() + seconds
    while marker not in data:
        assert time.monotonic() < deadline, f"no {marker!r} in {len(data)} bytes"
        try:
            data += os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.005)
    return data


def _read_after_close(sink: LogSink, fd: int) -> bytes:
    """Everything the sink writes, read while it closes (a reader that came back)."""
    closing = threading.Thread(target=sink.close, daemon=True)
    closing.start()
    os.set_blocking(fd, False)
    data, deadline = b"", time.monotonic() + 10.0
    while closing.is_alive() or sink._thread.is_alive():
        assert time.monotonic() < deadline, "the sink did not close"
        try:
            data += os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.005)
    with contextlib.suppress(BlockingIOError):
        data += os.read(fd, 1 << 16)
    return data


def _in_thread(work, seconds: float = 10.0) -> None:
    """Run `work` where a blocking write would show: it must finish within `seconds`."""
    done = threading.Thread(target=work, daemon=True)
    done.start()
    done.join(seconds)
    assert not done.is_alive(), "the writer blocked"


def test_lines_arrive_whole_and_in_order_from_text_and_bytes(pipe):
    read_end, write_end = pipe
    sink = LogSink(write_end, gather=0.001)
    for n in range(500):  # 110 KB: more than the pipe holds, read while it closes
        if n % 2:
            sink.write((LINE % n).decode())
        else:
            sink.write_bytes(LINE % n)
    lines = _read_after_close(sink, read_end).splitlines(keepends=True)
    assert not sink._thread.is_alive()
    assert lines == [LINE % n for n in range(500)]
    assert sink.dropped == 0


def test_a_line_after_close_is_written_at_once(pipe):
    read_end, write_end = pipe
    sink = LogSink(write_end, gather=0.001)
    sink.write_bytes(LINE % 0)
    sink.close()
    sink.write("Unclosed client session\n")  # aiohttp's, at interpreter exit
    os.close(write_end)
    assert _read_all(read_end) == LINE % 0 + b"Unclosed client session\n"
    assert sink.dropped == 0


def test_what_else_writes_to_the_descriptor_never_lands_inside_a_line(pipe):
    """Python writes its own tracebacks straight to stderr: the sink's writes are whole
    lines of at most PIPE_BUF bytes, which a pipe never mixes with another write."""
    read_end, write_end = pipe
    sink = LogSink(write_end, gather=0.001)
    junk = b"Exception ignored in: <coroutine object " + b"y" * 250 + b">\n"
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(read_end)))
    reader.start()

    def other_writer() -> None:
        for _ in range(300):
            os.write(write_end, junk)

    other = threading.Thread(target=other_writer)
    other.start()
    for n in range(3000):
        sink.write_bytes(LINE % n)
    other.join(10.0)
    sink.close()
    assert not sink._thread.is_alive()
    os.close(write_end)
    reader.join(10.0)
    lines = received[0].splitlines(keepends=True)
    assert lines.count(junk) == 300
    assert [line for line in lines if line != junk] == [LINE % n for n in range(3000)]


def test_a_write_that_fails_for_now_loses_its_lines_only(pipe):
    """A full disk (ENOSPC, here /dev/full under the sink's descriptor) loses what was
    written then; once the disk has room the lines go on. Only a reader gone (EPIPE)
    stops the sink for good."""
    read_end, write_end = pipe
    descriptor = os.dup(write_end)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, descriptor)
        sink = LogSink(descriptor, gather=0.001)
        sink.write_bytes(LINE % 0)
        deadline = time.monotonic() + 10.0
        while sink.dropped == 0:
            assert time.monotonic() < deadline, "the failed write was not counted"
            time.sleep(0.005)
        os.dup2(write_end, descriptor)  # room again
        sink.write_bytes(LINE % 1)
        sink.close()
        assert not sink._thread.is_alive()
    finally:
        os.close(full)
        os.close(descriptor)
    os.close(write_end)
    lines = _read_all(read_end).splitlines()
    assert lines[0] == (LINE % 1).rstrip(b"\n")
    note = json.loads(lines[1])
    assert (note["event"], note["lines"]) == ("log_lines_dropped", 1) and sink.dropped == 1


def test_the_request_line_is_written_in_the_streams_encoding(pipe):
    """orjson's UTF-8 bytes go in as they are only when stderr is UTF-8; otherwise the
    request line is encoded like every other line."""
    read_end, write_end = pipe
    sink = LogSink(write_end, encoding="latin-1", gather=0.001)
    RequestLog(JSONLines(Redactor(frozenset())), sink)("rid", {"model": "café"})
    sink.write("route café\n")
    sink.close()
    os.close(write_end)
    data = _read_all(read_end)
    assert data.count("café".encode("latin-1")) == 2 and "café".encode() not in data


def test_a_non_blocking_descriptor_is_waited_on_not_taken_for_a_reader_gone(pipe):
    read_end, write_end = pipe
    os.set_blocking(write_end, False)  # as some parents leave a shared stderr
    sink = LogSink(write_end, gather=0.001)
    for n in range(1000):  # 220 KB: more than the pipe holds, so a write meets EAGAIN
        sink.write_bytes(LINE % n)
    data = _read_after_close(sink, read_end)
    assert data.splitlines(keepends=True) == [LINE % n for n in range(1000)]
    assert sink.dropped == 0


def test_a_reader_that_stops_reading_costs_lines_not_a_blocked_writer(pipe):
    read_end, write_end = pipe
    # A pipe holds 64 KiB; the sink 16 KiB more. The rest of 2,000 lines (440 KB) drop.
    sink = LogSink(write_end, max_bytes=16 * 1024, gather=0.001)
    _in_thread(lambda: [sink.write_bytes(LINE % n) for n in range(2000)])
    dropped = sink.dropped
    assert 0 < dropped < 2000
    # The reader comes back: what was held arrives, and how many lines were not.
    entries = [json.loads(line) for line in _read_after_close(sink, read_end).splitlines()]
    notes = [entry for entry in entries if entry["event"] == "log_lines_dropped"]
    assert notes and all(note["level"] == "warning" for note in notes)
    assert sum(note["lines"] for note in notes) == sink.dropped == dropped
    kept = [entry["n"] for entry in entries if entry["event"] == "request"]
    assert kept == sorted(set(kept))  # in order, none twice, none cut (each line parsed)
    assert len(kept) + dropped == 2000
    assert sink._queued == sink._taken  # the bound's count is back to nothing held


def test_a_reader_gone_costs_lines_and_raises_nothing(pipe):
    read_end, write_end = pipe
    os.close(read_end)
    sink = LogSink(write_end, gather=0.001)
    sink.write_bytes(LINE % 0)
    sink.close()  # the thread's write failed (EPIPE): that batch is lost
    _in_thread(lambda: [sink.write_bytes(LINE % n) for n in range(1, 100)])
    assert sink.dropped == 100


def test_close_gives_up_on_a_reader_that_never_reads(pipe):
    read_end, write_end = pipe
    sink = LogSink(write_end, gather=0.001)
    for n in range(1000):  # 220 KB: more than the pipe holds
        sink.write_bytes(LINE % n)
    _in_thread(lambda: sink.close(timeout=0.2), seconds=5.0)
    assert sink._thread.is_alive()  # still in its write: the process may exit anyway
    # Read on, so that the thread ends before the fixture closes its descriptor.
    data = _read_until(read_end, LINE % 999)
    sink._thread.join(5.0)
    assert not sink._thread.is_alive()
    assert data.count(b"\n") == 1000


def test_console_lines_are_told_of_drops_in_the_console_format(pipe):
    read_end, write_end = pipe
    sink = LogSink(write_end, json_lines=False, max_bytes=1024, gather=0.001)
    _in_thread(lambda: [sink.write(f"line {n}\n") for n in range(20000)])
    said = re.findall(
        r"^\S+ \[warning  \] log_lines_dropped lines=(\d+)$",
        _read_after_close(sink, read_end).decode(),
        re.M,
    )
    assert said and sum(map(int, said)) == sink.dropped > 0
