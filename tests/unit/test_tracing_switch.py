"""When tracing is on (telemetry/tracing.py): routes.yaml's endpoint, else the OTEL_*
variables; the SDK's own off switches win. No opentelemetry import is needed to decide."""

from __future__ import annotations

import pytest

from router.telemetry.tracing import shown, start_tracing, traces_endpoint
from router.types import TraceSettings

FILE = TraceSettings(endpoint="http://from-file:4318")


@pytest.mark.parametrize(
    ("settings", "environ", "expected"),
    [
        (TraceSettings(), {}, ("", "")),
        (
            TraceSettings(),
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ),
        (
            TraceSettings(),
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces",
            },
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/v1/traces"),
        ),
        (
            FILE,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            ("telemetry.traces.endpoint", "http://from-file:4318"),
        ),
        (TraceSettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, ("", "")),
    ],
)
def test_where_the_collector_comes_from(
    settings: TraceSettings, environ: dict[str, str], expected: tuple[str, str]
) -> None:
    assert traces_endpoint(settings, environ) == expected


@pytest.mark.parametrize(
    "environ", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}, {}]
)
def test_off_without_a_collector_or_when_the_sdk_is_switched_off(environ: dict[str, str]) -> None:
    settings = TraceSettings() if not environ else FILE
    assert start_tracing(settings, environ) is None


def test_the_collector_is_logged_without_its_credentials() -> None:
    assert shown("https://user:secret@collector.example:4318/v1/traces?token=x") == (
        "https://collector.example:4318"
    )
    assert shown("http://[::1]:4318") == "http://[::1]:4318"
