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
    for n in range(500):
        if n % 2:
            sink.write((LINE % n).decode())
        else:
            sink.write_bytes(LINE % n)
    sink.close()
    os.close(write_end)
    lines = _read_all(read_end).splitlines(keepends=True)
    assert lines == [LINE % n for n in range(500)]
    assert sink.dropped == 0


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
