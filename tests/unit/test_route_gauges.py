"""The route state and headroom series: what the page says, and what creating them costs
the cyclic GC (each object it tracks counts towards a young collection, about 10 ms at
the router's threshold of 20,000)."""

from __future__ import annotations

import gc
import math

from prometheus_client import CollectorRegistry, generate_latest

from router.config import parse_config
from router.outcomes import Headroom
from router.telemetry.labels import RouteState
from router.telemetry.metrics import Metrics
from router.types import Config
from tests import configs

ROOM = Headroom(remaining_requests=499, limit_requests=500, remaining_tokens=None,
                limit_tokens=30_000)  # fmt: skip


def config(routes: int) -> Config:
    models = {f"m{i:03d}": configs.model(configs.route("a", f"m{i:03d}")) for i in range(routes)}
    text = configs.routes_yaml(
        keys=[configs.key("a", "http://127.0.0.1:9/v1", api_key="sk-a")], models=models
    )
    return parse_config(text, source="routes.yaml", environ={})


def test_the_page_says_what_generate_latest_says_about_headroom_and_state():
    registry = CollectorRegistry()
    routes = config(3).all_routes()
    metrics = Metrics(registry, config(3))
    metrics.state.observe_route(routes[0], RouteState.AVAILABLE, 0.0, ROOM)
    metrics.state.observe_route(routes[1], RouteState.COOLING_DOWN, 30.0, ROOM)
    assert metrics.renderer.render() == generate_latest(registry)
    page = generate_latest(registry).decode()
    assert (
        'llm_router_route_headroom_limit{dimension="tokens",key="a",provider="openai",'
        'route="a/m000"} 30000.0'
    ) in page
    assert 'dimension="tokens",key="a",provider="openai",route="a/m001"} NaN' in page
    assert "a/m002" not in page.split("llm_router_route_headroom_remaining")[1]  # no report
    metrics.state.observe_route(routes[0], RouteState.AVAILABLE, 0.0, None)  # the report lapsed
    assert metrics.renderer.render() == generate_latest(registry)
    remaining = registry.get_sample_value(
        "llm_router_route_headroom_remaining",
        {"route": "a/m000", "key": "a", "provider": "openai", "dimension": "requests"},
    )
    assert remaining is not None and math.isnan(remaining)


def test_a_routes_first_headroom_report_leaves_few_objects_for_the_cyclic_gc():
    """The first scrape after 2,000 routes have reported headroom creates 8,000 series:
    as prometheus_client children they left about 28 tracked objects per route, two young
    collections in that scrape; a route's record with its four numbers leaves 5."""
    routes = config(200).all_routes()
    metrics = Metrics(CollectorRegistry(), config(200))
    metrics.renderer.render()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for route in routes:
            metrics.state.observe_route(route, RouteState.AVAILABLE, 0.0, ROOM)
        metrics.renderer.render()  # the first render makes each series' line prefix
        tracked = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert tracked <= 8 * len(routes), tracked / len(routes)
