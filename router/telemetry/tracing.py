"""OpenTelemetry traces, off unless a collector is named: the switch and the facts.

On when routes.yaml's `telemetry.traces.endpoint`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
or `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector (and neither `OTEL_SDK_DISABLED=true`
nor `OTEL_TRACES_EXPORTER=none` says otherwise). Only then is the `otel` extra imported
(telemetry/otel.py): with tracing off no opentelemetry module is loaded, and a request
pays one attribute check (`RouterState.tracing is None`, handlers/endpoint.py).

Spans are drawn after the fact, when a request's log line is written, from what the
request already recorded (`RequestFacts`, its `Attempt`s with their start and duration):
the request path itself is the same with tracing on or off. What goes into a span is
listed in telemetry/otel.py; never a prompt, a completion, a header value or a key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from router.outcomes import Attempt
from router.types import DISTRIBUTION, Key, TraceSettings
from router.wire.usage import Usage

log = structlog.get_logger("router.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(slots=True, kw_only=True)
class RequestFacts:
    """One finished client request, as its spans are drawn. Times are perf_counter()."""

    method: str
    path: str
    traceparent: str | None  # the client's W3C traceparent: the request span's parent
    request_id: str | None  # the router's own id; None when the client chose it (a header)
    started: float
    ended: float
    status: int
    outcome: str
    model: str | None  # the model the client asked for, once known
    served_by: str | None  # the model that answered (a fallback's name, say)
    route: str | None  # the route that answered
    attempts: tuple[Attempt, ...]
    keys: Mapping[str, Key]  # the config's, for each attempt's provider and address
    stream_end: str | None  # how a stream ended; None when it was not one
    usage: Usage | None
    cost_usd: float | None
    waited: float | None
    ttft: float | None
    # The answer's body or a stream's first bytes, status 200 only: its top-level
    # "model" is read (gen_ai.response.model), nothing else.
    reply: bytes = b""


class Tracing(Protocol):
    def record(self, facts: RequestFacts) -> None:
        """Draw and queue the spans of one request (exported in the background)."""

    async def shutdown(self) -> None:
        """Export what is queued, within a bound; then nothing more is recorded."""


def traces_endpoint(settings: TraceSettings, environ: Mapping[str, str]) -> tuple[str, str]:
    """(where it is set, the endpoint), or ("", "") when no collector is named."""
    if settings.endpoint:
        return "telemetry.traces.endpoint", settings.endpoint
    for name in ENDPOINT_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return "", ""


def start_tracing(
    settings: TraceSettings, environ: Mapping[str, str] | None = None
) -> Tracing | None:
    """The exporter when tracing is asked for and the `otel` extra is installed; None,
    with one warning saying why, when it is asked for and cannot run."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    source, endpoint = traces_endpoint(settings, environ)
    if not endpoint:
        return None
    try:
        from router.telemetry.otel import OtelTracing  # the otel extra: only now
    except ImportError as exc:
        log.warning(
            "tracing_unavailable",
            detail=f"{source} is set but the otel extra is not installed "
            f"({exc.name or exc} is missing): pip install '{DISTRIBUTION}[otel]'; "
            "no traces are exported",
        )
        return None
    try:
        tracing = OtelTracing(settings)
    except Exception as exc:  # a malformed OTEL_* value, say: serve without traces
        log.warning("tracing_unavailable", detail=f"cannot start the trace exporter: {exc}")
        return None
    log.info(
        "tracing",
        collector=shown(endpoint),
        sample_rate=settings.sample_rate,
        detail=f"spans over OTLP/HTTP to the collector named by {source}",
    )
    return tracing


def shown(url: str) -> str:
    """scheme://host:port of `url`: a URL may carry credentials, never logged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number: the exporter will say so
        port = ""
    return f"{parts.scheme}://{host}{port}"
