"""structlog setup and the redaction step every log line passes through.

Events are snake_case facts (`failover`, `route_cooled_down`, `key_disabled`, `request`)
with the request id bound once per request through contextvars. The redactor replaces
every configured secret and anything shaped like a provider key or bearer token in the
rendered line, so no field, nested or not, escapes it; no ANSI codes in JSON lines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

_KEY_SHAPES = re.compile(
    r"(?:sk-ant-[A-Za-z0-9_-]{8,}|sk-(?:proj-)?[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)
REDACTED = "[redacted]"


class Redactor:
    """Replaces configured secrets and anything shaped like a key in rendered log text.

    It runs on the final line (after the renderer), so one regex pass covers every
    field, nested values included. A secret is also matched in its JSON-escaped form,
    the way a JSON renderer would have written it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {form for s in secrets if len(s) >= 6 for form in (s, json.dumps(s)[1:-1])}
        exact = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        self._pattern = re.compile(
            f"{exact}|{_KEY_SHAPES.pattern}" if exact else _KEY_SHAPES.pattern
        )
        # Substring tests cost far less than the regex, and nearly every line fails all
        # of them: then the regex is skipped. Every branch of it starts with one of these.
        self._hints = (*sorted(forms), "sk-", "AIza")

    def scrub(self, text: str) -> str:
        if not any(hint in text for hint in self._hints) and "bearer" not in text.lower():
            return text
        return self._pattern.sub(REDACTED, text)


class RedactingRenderer:
    """A structlog renderer that hands on only redacted text."""

    def __init__(self, renderer: Callable[..., str], redactor: Redactor) -> None:
        self._renderer = renderer
        self._redactor = redactor

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        return self._redactor.scrub(self._renderer(logger, method, event))


def add_timestamp(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """ISO 8601 UTC with milliseconds; cheaper than TimeStamper on the per-request line."""
    event["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    return event


def configure_logging(
    *,
    fmt: str = "json",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """JSON lines (or `console` for people) on `stream`, stderr by default.

    `cache_loggers=False` is for tests: a cached module logger would keep writing to
    the test's stream after the test has put the default configuration back.
    """
    stream = stream or sys.stderr
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_timestamp,
            structlog.processors.format_exc_info,
            RedactingRenderer(renderer, Redactor(secrets)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=cache_loggers,
    )
