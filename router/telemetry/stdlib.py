"""Other libraries' log lines (aiohttp, asyncio, litellm, warnings) written the router's way.

Those libraries log through the standard `logging` module, which the router's structlog
setup does not see: unconfigured, their records went to stderr as plain text, unredacted
(aiohttp's "Error handling request" quotes a bad request's raw header line, the client's
key included). `RecordLines` is installed on the root logger and sends every record
through the router's own processors, so it comes out in the same format (JSON or console)
and through the same redaction as the router's lines.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TextIO

from router.telemetry.log_sink import LogSink

Processor = Callable[[Any, str, MutableMapping[str, Any]], Any]


class RecordLines(logging.Handler):
    """Writes each stdlib record through structlog `processors` (the last one renders)."""

    def __init__(
        self, processors: Sequence[Processor], stream: TextIO | LogSink, level: int
    ) -> None:
        super().__init__(level)
        self._processors = tuple(processors)
        self._stream = stream
        self._write_lock = threading.Lock()  # litellm logs from its worker threads too

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: MutableMapping[str, Any] = {
                "event": record.getMessage(),
                "logger": record.name,
            }
            if record.exc_info:
                event["exc_info"] = record.exc_info
            method = record.levelname.lower()
            rendered: Any = event
            for processor in self._processors:
                rendered = processor(None, method, rendered)
            with self._write_lock:
                self._stream.write(f"{rendered}\n")
                self._stream.flush()
        except Exception:  # logging must never take the caller down
            self.handleError(record)


# Libraries speak at warning and above: their info and debug lines (litellm's, one per
# call, and its debug dumps of prompts) are chatter the router's own events already cover.
LIBRARY_LEVEL = logging.WARNING


def install(handler: RecordLines, level: int) -> None:
    """`handler` as the root logger's only RecordLines, at `level` but never below
    warning; Python warnings too."""
    root = logging.getLogger()
    uninstall()
    level = max(level, LIBRARY_LEVEL)
    handler.setLevel(level)  # a library logger with a level of its own still stops here
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    adopt_library_loggers()


def uninstall() -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, RecordLines)]:
        root.removeHandler(old)
    logging.captureWarnings(False)


def adopt_library_loggers() -> None:
    """Send loggers that write to the console themselves (litellm adds its own stderr
    handler at import) through the root handler instead, which redacts.

    Call it again after importing a library that does so.
    """
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        console = [h for h in logger.handlers if _writes_to_console(h)]
        for handler in console:
            logger.removeHandler(handler)
        if console:
            logger.propagate = True


def _writes_to_console(handler: logging.Handler) -> bool:
    """A handler writing to stdout or stderr itself (not a file, not a test's capture)."""
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return any(handler.stream is console for console in consoles)
