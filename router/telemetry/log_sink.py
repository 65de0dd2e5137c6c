"""Log lines written to the process's stderr by a thread of their own, never by the loop.

A log line written on the event loop is a blocking write(2) to whatever reads stderr:
a pipe to a container runtime, a log shipper, `| grep`, a terminal. When that reader
stops reading, the pipe fills (64 KiB on Linux) and the write blocks the loop, every
request and stream with it: the router stalled for good after about a hundred requests.
When the reader is gone (`| head`, a shipper restarted) the write raises BrokenPipeError
in whatever logged, and every request answered 500. `LogSink` takes the lines on the
loop into a queue and one thread writes them, gathered (one write per `gather` seconds
of lines, not one per line, as nginx's `access_log ... buffer= flush=` and Envoy's
access-log flush interval do), so neither can happen:

- the queue holds at most `max_bytes` (4 MiB); past that a line is dropped and counted
  (`llm_router_log_lines_dropped_total`), and once the reader takes lines again a
  `log_lines_dropped` line says how many it missed;
- a write that fails (the reader gone) drops that batch and every later line, counted
  the same way; the router serves on;
- `close()` at exit writes what is queued, waiting `timeout` seconds at most for a
  reader that does not read.

Lines keep their order: every writer (structlog, the stdlib bridge, the request log) goes
through the same sink. Only the process's own stderr gets one (cli.py); a stream a
caller passes to `configure_logging()` (a test's StringIO) is written as before.
"""

from __future__ import annotations

import collections
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


def over_stderr(*, json_lines: bool) -> LogSink | None:
    """A sink over this process's stderr; None when it has no file descriptor."""
    stream = sys.stderr
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # None, or a stream with no descriptor
        return None
    stream.flush()  # anything written to it before goes first
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return LogSink(fd, encoding=encoding, tty=stream.isatty(), json_lines=json_lines)


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
        self._tty = tty
        self._json = json_lines
        self._max_bytes = max_bytes
        self._gather = gather
        self._lines: collections.deque[bytes] = collections.deque()
        # Each counter has one writer: the loop's side the first three, the thread the
        # rest, so no update is lost between them (another thread that logs, litellm's,
        # may miss one of `_queued`, which only makes the bound a little loose).
        self._queued = 0  # bytes ever queued
        self._dropped = 0  # lines dropped before they were queued
        self._armed = False  # the thread has been woken for what is queued
        self._written = 0  # bytes taken off the queue (written or lost with a broken fd)
        self._lost = 0  # lines queued, then lost with a write that failed
        self._reported = 0  # of the drops, those a `log_lines_dropped` line has told of
        self._broken = False  # a write failed: the reader is gone, lines are dropped
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
        if self._broken or self._queued - self._written + len(line) > self._max_bytes:
            self._dropped += 1
            return
        self._lines.append(line)
        self._queued += len(line)
        if not self._armed:
            self._armed = True
            self._wake.set()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued, for `timeout` seconds at most, and stop the thread."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._closing.wait(self._gather)  # gather a batch, unless closing
            self._wake.clear()
            self._armed = False  # after the clear: a line queued from now on wakes it again
            batch = self._take()
            if batch:
                self._send(batch)
            if self._closing.is_set() and not self._lines:
                return

    def _take(self) -> list[bytes]:
        lines, batch = self._lines, []
        while lines:
            batch.append(lines.popleft())
        dropped = self.dropped
        if dropped != self._reported and not self._broken:
            batch.append(self._note(dropped - self._reported))
            self._reported = dropped
        return batch

    def _send(self, batch: list[bytes]) -> None:
        data = b"".join(batch)
        if self._broken:
            self._lost += len(batch)
        else:
            view = memoryview(data)
            try:
                while view:
                    try:
                        view = view[os.write(self._fd, view) :]
                    except BlockingIOError:  # a stderr some parent made non-blocking
                        select.select((), (self._fd,), (), 1.0)  # wait for room
            except OSError:  # EPIPE, EBADF, EIO: the reader or the file is gone
                self._broken = True
                self._lost += len(batch)
        self._written += len(data)

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
