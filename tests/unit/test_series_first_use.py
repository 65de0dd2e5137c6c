"""A route's and a model's series appear on the page at their first use, not before,
and count right however the request path held them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from router.telemetry.metrics import Metrics
from tests.unit.test_route_gauges import config

LABELS = {"model": "m000", "route": "a/m000", "key": "a", "provider": "openai"}


def test_token_and_spend_series_appear_at_their_first_increment() -> None:
    registry = CollectorRegistry()
    cfg = config(1)
    metrics = Metrics(registry, cfg)
    route = cfg.all_routes()[0]
    series = metrics.route_series("m000", route)
    tokens = "llm_router_tokens_total"
    assert registry.get_sample_value(tokens, {**LABELS, "direction": "input"}) is None
    assert registry.get_sample_value("llm_router_spend_usd_total", LABELS) is None
    series.tokens_in.inc(7)
    series.tokens_in.inc(3)
    series.spend.inc(0.5)
    assert registry.get_sample_value(tokens, {**LABELS, "direction": "input"}) == 10
    assert registry.get_sample_value(tokens, {**LABELS, "direction": "output"}) is None
    assert registry.get_sample_value("llm_router_spend_usd_total", LABELS) == 0.5


def test_a_stand_in_held_before_the_first_use_counts_into_the_same_series() -> None:
    """The request handler reads a model's in-flight gauge once and both raises and
    lowers it: a read before the gauge existed must still lower the same gauge."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, config(1))
    held_by_one = metrics.model_series("m000").in_flight
    held_by_two = metrics.model_series("m000").in_flight
    held_by_one.inc(1)
    held_by_two.inc(1)
    held_by_one.dec(1)
    assert registry.get_sample_value("llm_router_requests_in_flight", {"model": "m000"}) == 1
    assert metrics.model_series("m000").in_flight is not held_by_one  # the gauge itself now
    metrics.model_series("m000").in_flight.dec(1)
    assert registry.get_sample_value("llm_router_requests_in_flight", {"model": "m000"}) == 0
