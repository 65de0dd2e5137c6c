"""The fast /metrics renderer writes exactly what prometheus_client's would."""

from __future__ import annotations

import math

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from router.telemetry.exposition import Renderer


def test_the_page_is_the_same_text_as_generate_latest():
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # not ours: rendered by prometheus_client
    counter = Counter("t_requests", "Requests.", ["model", "outcome"], registry=registry)
    gauge = Gauge("t_state", 'A "quoted"\\ help\nline.', ["route"], registry=registry)
    histogram = Histogram("t_seconds", "Time.", ["model"], buckets=(0.1, 1.0), registry=registry)
    plain = Gauge("t_degraded", "Unlabelled.", registry=registry)
    counter.labels("gpt-4o", "served").inc(3)
    counter.labels('we"ird\\na\nme', "failed")  # escaping, at 0
    gauge.labels("a/gpt-4o").set(math.nan)
    gauge.labels("b/gpt-4o").set(1e9)
    histogram.labels("gpt-4o").observe(0.05)
    histogram.labels("gpt-4o").observe(7.0)
    plain.set(1)
    renderer = Renderer(registry, [counter, gauge, histogram, plain])

    def without_process(page: bytes) -> bytes:  # its CPU seconds move between the two
        return b"".join(
            line for line in page.splitlines(keepends=True) if not line.startswith(b"process_")
        )

    for _ in range(2):  # the second time from the caches
        assert without_process(renderer.render()) == without_process(generate_latest(registry))
        counter.labels("gpt-4o", "served").inc()
        histogram.labels("gpt-4o").observe(0.5)
