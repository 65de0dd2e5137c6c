"""A /metrics scrape that a reload interrupts (handlers/scrape.py): the refresh of the
state gauges yields to the loop between chunks of routes, and a reload may come then."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from router.config import parse_config
from router.handlers.scrape import refresh_state_gauges
from router.health.memory import MemoryStore
from router.health.tracker import HealthTracker
from router.outcomes import BlockReason
from router.telemetry.metrics import SCRAPE_CHUNK, Metrics
from router.types import Config
from tests import configs


def config(*, with_a: bool) -> Config:
    """Key b with one route; key a, when `with_a`, with four chunks of routes."""
    keys = [configs.key("b", "http://127.0.0.1:9/v1", api_key="sk-b")]
    models = {"kept": configs.model(configs.route("b", "kept"))}
    if with_a:
        keys.append(configs.key("a", "http://127.0.0.1:9/v1", api_key="sk-a"))
        models |= {f"m{i:03d}": configs.model(configs.route("a", f"m{i:03d}"))
                   for i in range(SCRAPE_CHUNK * 4)}  # fmt: skip
    text = configs.routes_yaml(keys=keys, models=models)
    return parse_config(text, source="routes.yaml", environ={})


async def test_a_scrape_a_reload_interrupts_makes_no_gauge_for_the_routes_it_removed():
    registry = CollectorRegistry()
    before, after = config(with_a=True), config(with_a=False)
    metrics = Metrics(registry, before)
    store = MemoryStore(time.monotonic)
    health = HealthTracker(store, before.failover, time.monotonic)
    await health.disable_key(before.keys["a"], 3600, BlockReason.AUTH)  # every a route: state
    scrape = asyncio.create_task(refresh_state_gauges(metrics, health, store))
    await asyncio.sleep(0)  # the scrape has begun: its first chunk
    await asyncio.sleep(0)
    assert not scrape.done()
    gone = [route for route in before.all_routes() if route.key.name == "a"]
    metrics.reconfigure(after, gone, [before.keys["a"]])  # the reload, between two chunks
    await scrape
    left = [
        (sample.name, sample.labels.get("route"))
        for family in registry.collect()
        if family.name in ("llm_router_route_state", "llm_router_key_disabled")
        for sample in family.samples
        if sample.labels.get("key") == "a"
    ]
    assert left == []
