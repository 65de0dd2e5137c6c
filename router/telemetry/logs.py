"""structlog setup and the redaction step every log line passes through.

Events are snake_case facts (`failover`, `route_cooled_down`, `key_disabled`, `request`)
with the request id bound once per request through contextvars. The redactor replaces
every configured secret and anything shaped like a provider key or bearer token in the
rendered line, so no field, nested or not, escapes it; no ANSI codes in JSON lines.
"""

from __future__ import annotations

import codecs
import contextvars
import io
import logging
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog

from router.telemetry import stdlib
from router.telemetry.log_sink import LogSink
from router.wire.fastjson import log_text
from router.wire.redact import REDACTED, Redactor

__all__ = [
    "REDACTED",
    "JSONLines",
    "Redactor",
    "RequestLog",
    "bind_request_id",
    "configure_logging",
    "dropped_lines",
    "redact_also",
    "request_log",
    "reset_logging",
]


class RedactingRenderer:
    """A structlog renderer that hands on only redacted text."""

    def __init__(self, renderer: Callable[..., str], redactor: Redactor) -> None:
        self._renderer = renderer
        self._redactor = redactor

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        return self._redactor.scrub(self._renderer(logger, method, event))


class _Timestamps:
    """ISO 8601 UTC with milliseconds (`2026-11-24T06:39:53.123+00:00`), the date and
    time part formatted once a second: datetime's own formatting cost more than the
    rest of a request line's timestamping."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        millis = int(time.time() * 1000)
        second = millis // 1000
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return self._prefix + _MILLIS[millis - second * 1000]


# Each millisecond's ending, written once: formatting `:03d` on every line cost more.
_MILLIS = tuple(f".{millis:03d}+00:00" for millis in range(1000))


_timestamps = _Timestamps()


def add_timestamp(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event["timestamp"] = _timestamps.now()
    return event


# add_log_level's names: structlog's method names for two levels are not the levels.
_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}


class JSONLines:
    """The JSON pipeline as one structlog processor: request context, level, timestamp,
    exception text, JSON, redaction. One step costs less than five on every line."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        structlog.contextvars.merge_contextvars(logger, method, event)
        event["level"] = _LEVEL_OF_METHOD.get(method, method)
        event["timestamp"] = _timestamps.now()
        if "exc_info" in event:
            structlog.processors.format_exc_info(logger, method, event)
        return self._redactor.scrub(log_text(event))

    def line(self, event: dict[str, Any]) -> str:
        """A finished event (level and request id set by the caller) as a redacted line."""
        event["timestamp"] = _timestamps.now()
        return self._redactor.scrub(log_text(event)) + "\n"

    def line_bytes(self, event: dict[str, Any]) -> bytes:
        """`line()` as UTF-8 for a binary stream: orjson writes bytes, and the redaction
        hands clean bytes back as they came, so the line is never encoded again."""
        event["timestamp"] = _timestamps.now()
        try:
            data = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # what orjson cannot write as it is: log_text() writes it
            return self.line(event).encode("utf-8", "backslashreplace")
        return self._redactor.scrub_bytes(data)


class RequestLog:
    """Writes the one `request` event each request ends with.

    With JSON lines at info level the line is rendered and written here, straight to
    the log stream, skipping structlog's bound-logger call path: that path was about
    half of what the line cost (bench/cpu.py). Otherwise the event goes through
    structlog like any other, which also drops it above info level.
    """

    def __init__(
        self, renderer: JSONLines | None = None, stream: TextIO | LogSink | None = None
    ) -> None:
        self._renderer = renderer
        self._write = stream.write if stream is not None else None
        self._write_bytes: Callable[[bytes], None] | None
        if isinstance(stream, LogSink):
            self._write_bytes = stream.write_bytes if stream.utf8 else None
        else:
            self._write_bytes = _bytes_writer_under(stream)
        self._fallback = structlog.get_logger("router.request")

    def __call__(self, request_id: str, fields: dict[str, Any]) -> None:
        if self._renderer is None or self._write is None:
            self._fallback.info("request", **fields)
            return
        fields["event"] = "request"
        fields["request_id"] = request_id
        fields["level"] = "info"
        if self._write_bytes is not None:
            self._write_bytes(self._renderer.line_bytes(fields))
            return
        self._write(self._renderer.line(fields))


def _bytes_writer_under(stream: TextIO | None) -> Callable[[bytes], None] | None:
    """A writer to the binary layer of a UTF-8 text stream (stderr, as Python opens it),
    which takes the request line as it comes from orjson, past the text layer's decoding
    and encoding; None for any other stream. Every other line goes through the text
    layer, and each ends with a newline and a flush (structlog's writer, stdlib.py), so
    nothing of them waits there when a request line goes under it."""
    if not isinstance(stream, io.TextIOWrapper):
        return None
    try:
        if codecs.lookup(stream.encoding).name != "utf-8":
            return None
    except LookupError:
        return None
    binary = stream.buffer
    if isinstance(binary, io.BufferedIOBase):  # Python's default: a line, then a flush
        write, flush = binary.write, binary.flush

        def buffered(line: bytes) -> None:
            write(line)
            flush()

        return buffered
    if isinstance(binary, io.RawIOBase):  # PYTHONUNBUFFERED=1 (as the Dockerfile sets)
        raw_write = binary.write

        def unbuffered(line: bytes) -> None:
            written = raw_write(line)
            # A raw write may take less than it is given: the rest, until all is out.
            while written is not None and written < len(line):
                line = line[written:]
                written = raw_write(line)

        return unbuffered
    return None


def _request_id_var() -> contextvars.ContextVar[Any]:
    """structlog's context variable for `request_id` (the token of a bind says which)."""
    token = structlog.contextvars.bind_contextvars(request_id=None)["request_id"]
    token.var.reset(token)
    return token.var


_REQUEST_ID = _request_id_var()


def bind_request_id(request_id: str) -> None:
    """The request id every log line of the current request carries.

    The one key the router binds: setting its variable replaces the previous request's
    (a keep-alive connection serves its requests in one task), so there is nothing to
    clear. structlog's clear_contextvars() and bind_contextvars() cost about 1.5 µs a
    request, which this set does in a tenth of that.
    """
    _REQUEST_ID.set(request_id)


_request_log = RequestLog()
_sink: LogSink | None = None  # the stream, when it is the process's own sink (cli.py)
# The secrets the log redacts, and the steps that hold its Redactor (redact_also()).
_secrets: frozenset[str] = frozenset()
_redacting: list[JSONLines | RedactingRenderer] = []


def request_log() -> RequestLog:
    """The request log for the current configure_logging() call."""
    return _request_log


def dropped_lines() -> int:
    """Log lines the current sink could not write (0 for any other stream)."""
    return _sink.dropped if _sink is not None else 0


def configure_logging(
    *,
    fmt: str = "json",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | LogSink | None = None,
    cache_loggers: bool = True,
) -> None:
    """JSON lines (or `console` for people) on `stream`, stderr by default; records of
    the standard `logging` module (aiohttp, asyncio, litellm) go the same way.

    `cache_loggers=False` is for tests: a cached module logger would keep writing to
    the test's stream after the test has put the default configuration back
    (reset_logging()).
    """
    global _request_log, _secrets, _sink
    stream = stream or sys.stderr
    _sink = stream if isinstance(stream, LogSink) else None
    _secrets = frozenset(secrets)
    redactor = Redactor(_secrets)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    processors: list[Any]
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        redacting: JSONLines | RedactingRenderer = RedactingRenderer(renderer, redactor)
        processors = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_timestamp,
            structlog.processors.format_exc_info,
            redacting,
        ]
        _request_log = RequestLog()
    else:
        lines = redacting = JSONLines(redactor)
        processors = [lines]
        _request_log = RequestLog(lines, stream) if threshold <= logging.INFO else RequestLog()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=cache_loggers,
    )
    stdlib.install(stdlib.RecordLines(processors, stream, threshold), threshold)
    _redacting[:] = [redacting]


def redact_also(secrets: Iterable[str]) -> None:
    """Redact `secrets` too from now on (keys a reloaded routes.yaml added). Secrets
    already known stay: a line may still name a request that began on the old config."""
    global _secrets
    known = _secrets | frozenset(secrets)
    if known == _secrets:
        return
    _secrets = known
    redactor = Redactor(known)
    for step in _redacting:
        step._redactor = redactor


def reset_logging() -> None:
    """structlog's defaults again, and a request log that goes through them."""
    global _request_log, _secrets, _sink
    structlog.reset_defaults()
    _sink = None
    stdlib.uninstall()
    _request_log = RequestLog()
    _secrets = frozenset()
    _redacting.clear()
