"""Log lines written to the process's stderr by a thread of their own, never by the loop.

A log line written on the event loop is a blocking write(2) to whatever reads stderr:
a pipe to a container runtime, a log shipper, `| grep`, a terminal. When that reader
stops reading, the pipe fills (64 KiB on Linux) and the write blocks the loop, every
request and stream with it: the router stalled for good after about a hundred requests.
When the reader is gone (`| head`, a shipper restarted) the write raises BrokenPipeError
in whatever logged, and every request answered 500. `LogSink` takes the lines on the
loop into a queue and one thread writes them, gathered over `gather` seconds (as nginx's
`access_log ... buffer= flush=` and Envoy's access-log flush interval do), so neither can
happen:

- the queue holds at most `max_bytes` (4 MiB); past that a line is dropped and counted
  (`llm_router_log_lines_dropped_total`), and once the reader takes lines again a
  `log_lines_dropped` line says how many it missed;
- a write the reader is gone for (EPIPE) drops those lines and every later one, counted
  the same way; one that fails otherwise (a full disk) drops only its own lines; the
  router serves on;
- `close()` at exit writes what is queued, waiting `timeout` seconds at most for a
  reader that does not read; a line logged after it is written at once, as before.

Each write is whole lines of at most PIPE_BUF (4 KiB) together, which a pipe writes
whole: whatever else writes to the descriptor (a traceback Python prints) never lands
inside a line, and a batch is never copied whole. A terminal gets each line at once.

Lines keep their order: every writer (structlog, the stdlib bridge, the request log) goes
through the same sink. Only the process's own stderr gets one (cli.py); a stream a
caller passes to `configure_logging()` (a test's StringIO) is written as before.
"""

from __future__ import annotations

import codecs
import collections
import errno
import os
import select
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
from prometheus_client.core import CounterMetricFamily

MAX_BYTES = 4 * 1024 * 1024
GATHER_SECONDS = 0.05
CLOSE_TIMEOUT = 2.0
_ATOMIC = select.PIPE_BUF  # bytes a pipe writes whole, never mixed with another write


def over_stderr(*, json_lines: bool, gather: float = GATHER_SECONDS) -> LogSink | None:
    """A sink over this process's stderr; None when it has no file descriptor."""
    stream = sys.stderr
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # None, or a stream with no descriptor
        return None
    stream.flush()  # anything written to it before goes first
    encoding = getattr(stream, "encoding", None) or "utf-8"
    tty = stream.isatty()
    return LogSink(fd, encoding=encoding, tty=tty, json_lines=json_lines, gather=gather)


class LogSink:
    """A file-like sink (`write`, `flush`, `isatty`) whose lines a thread writes to `fd`."""

    def __init__(
        self,
        fd: int,
        *,
        encoding: str = "utf-8",
        tty: bool = False,
        json_lines: bool = True,
        max_bytes: int = MAX_BYTES,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._fd = fd
        self.encoding = encoding
        # Whether bytes that are UTF-8 (orjson's) may go in as they are (RequestLog).
        self.utf8 = codecs.lookup(encoding).name == "utf-8"
        self._tty = tty
        self._json = json_lines
        self._max_bytes = max_bytes
        # A person at a terminal sees each line at once; anything else gets it in batches.
        self._gather = 0.0 if tty else gather
        self._lines: collections.deque[bytes] = collections.deque()
        # Each counter has one side that changes it: the writers `_queued` and `_dropped`,
        # the thread `_taken`, `_lost` and `_reported`, so no update is lost between them.
        # `_armed` is set by a writer and cleared by the thread once it has cleared the
        # event. (Writers on several threads, litellm's among them, rely on CPython not
        # switching threads inside `+=` of an int; a lost update of `_queued` would only
        # make the bound a line looser.)
        self._queued = 0  # bytes ever queued
        self._dropped = 0  # lines dropped before they were queued
        self._armed = False  # the thread has been woken for what is queued
        self._taken = 0  # bytes the thread took off the queue
        self._lost = 0  # lines queued, then lost with a write that failed
        self._reported = 0  # of the drops, those a `log_lines_dropped` line has told of
        self._broken = False  # the reader is gone (EPIPE) or the descriptor is
        self._refuse = False  # broken, or closed: not queued any more
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-sink", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines that never reached the reader."""
        return self._dropped + self._lost

    def isatty(self) -> bool:
        return self._tty

    def write(self, text: str) -> int:
        self.write_bytes(text.encode(self.encoding, "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the thread writes (`close()` waits for it)."""

    def write_bytes(self, line: bytes) -> None:
        """Queue `line` (whole lines only, each ending in a newline) for the thread."""
        if self._refuse or self._queued - self._taken + len(line) > self._max_bytes:
            self._refused(line)
            return
        self._lines.append(line)
        self._queued += len(line)
        if not self._armed:
            self._armed = True
            self._wake.set()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued, for `timeout` seconds at most, and stop the thread.
        A line logged after it (at interpreter exit) is written at once, as before the
        sink, unless the reader was gone or had stopped reading."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        self._refuse = True

    def _refused(self, line: bytes) -> None:
        if self._broken or not self._refuse or self._thread.is_alive():
            self._dropped += 1  # over the bound, the reader gone, or stalled at exit
            return
        try:
            self._write(line)
        except OSError:
            self._dropped += 1

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._gather:
                self._closing.wait(self._gather)  # gather a batch, unless closing
            self._wake.clear()
            self._armed = False  # after the clear: a line queued from now on wakes it again
            self._write_queued()
            if self._closing.is_set() and not self._lines:
                return

    def _write_queued(self) -> None:
        """Every line queued, in writes of whole lines of at most PIPE_BUF bytes: a pipe
        writes those whole, so whatever else writes to the descriptor (a traceback
        Python prints) never lands inside a line. Then the count of lines dropped."""
        lines, chunk, size = self._lines, [], 0
        while lines:
            line = lines.popleft()
            self._taken += len(line)
            if chunk and size + len(line) > _ATOMIC:
                self._send(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._send(chunk)
        dropped = self.dropped
        if dropped != self._reported and not self._broken:
            try:
                self._write(self._note(dropped - self._reported))
            except OSError:
                return  # the next note says these too
            self._reported = dropped

    def _send(self, chunk: list[bytes]) -> None:
        if self._broken:
            self._lost += len(chunk)
            return
        try:
            self._write(chunk[0] if len(chunk) == 1 else b"".join(chunk))
        except OSError as exc:
            self._lost += len(chunk)
            # The reader is gone for good; a full disk or an I/O error may pass.
            if isinstance(exc, BrokenPipeError) or exc.errno == errno.EBADF:
                self._broken = self._refuse = True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:  # a stderr some parent made non-blocking
                select.select((), (self._fd,), (), 1.0)  # wait for room

    def _note(self, count: int) -> bytes:
        """The line that tells the reader how many lines it did not get."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        if self._json:
            line = {"event": "log_lines_dropped", "level": "warning", "lines": count}
            line["timestamp"] = stamp
            return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        return f"{stamp} [warning  ] log_lines_dropped lines={count}\n".encode()


class DroppedLinesCounter:
    """`llm_router_log_lines_dropped_total`: read from the sink at each scrape."""

    NAME = "llm_router_log_lines_dropped"
    HELP = "Log lines dropped: stderr's reader fell 4 MiB behind, or was gone."

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.NAME, self.HELP)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.NAME, self.HELP, value=self._count())
