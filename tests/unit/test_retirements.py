"""Upstream models their provider retires (litellm's `deprecation_date`): the warning the
config gives, and the gauge an alert reads."""

from __future__ import annotations

import datetime
import json
import textwrap

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router.config import catalog, format_route_table, parse_config
from router.telemetry.metrics import Metrics
from router.types import Config

CONFIG = textwrap.dedent("""\
    keys:
      main: {provider: openai, api_key: "${K}"}
      spare: {provider: openai, api_base: "https://api.openai.com/v1/", api_key: "${K}"}
      compat: {provider: openai, api_base: "https://llm.example.net/v1", api_key: "${K}"}
    models:
      a:
        routes:
          - {key: main, model: old-x}
          - {key: spare, model: old-x}
          - {key: compat, model: old-x}   # someone else's old-x: no warning
      b:
        routes: [{key: main, model: new-x}, {key: spare, model: odd-x}]
        fallback: [a]
    """)
ENV = {"K": "sk-test-0123456789abcdef"}
LABELS = {"key": "main", "provider": "openai", "route": "main/old-x"}


def load(text: str) -> Config:
    return parse_config(text, source="routes.yaml", environ=ENV)


@pytest.fixture
def dated(tmp_path, monkeypatch):
    """A shipped file that wins over any installed litellm (it says it is from litellm
    999) and dates one model's retirement: old-x; new-x has no date, odd-x and feb-x no real one."""
    path = tmp_path / "model_data.json"
    models = {
        "old-x": {"deprecation_date": "2027-01-14"},
        "new-x": {},
        "odd-x": {"deprecation_date": "soon"},
        "feb-x": {"deprecation_date": "2026-02-30"},  # no such day
    }
    path.write_text(json.dumps({"source": {"litellm": "999.0.0"}, "models": models}))
    monkeypatch.setattr(catalog, "SHIPPED", path)
    catalog.forget()
    yield
    catalog.forget()


def test_a_dated_model_warns_once_naming_the_routes_that_reach_its_provider(dated):
    config = load(CONFIG)
    assert catalog.facts("openai", "old-x").retires == "2027-01-14"
    assert catalog.facts("openai", "odd-x").retires is None  # not a date: not believed
    assert catalog.facts("openai", "feb-x").retires is None  # nor a day that never is
    assert config.warnings == (
        "openai retires old-x on 2027-01-14 (litellm's model data): from then on it answers "
        "404 and routes main/old-x, spare/old-x are skipped; move the routes to a current model",
    )
    assert "2027-01-14" in format_route_table(config)  # what `llm-router check` prints


def test_the_gauge_says_when_each_dated_route_retires_and_follows_a_reload(dated):
    registry = CollectorRegistry()
    config = load(CONFIG)
    metrics = Metrics(registry, config)
    midnight = datetime.datetime(2027, 1, 14, tzinfo=datetime.UTC).timestamp()
    name = "llm_router_route_retirement_timestamp_seconds"
    assert registry.get_sample_value(name, LABELS) == midnight
    assert registry.get_sample_value(name, {**LABELS, "route": "spare/old-x", "key": "spare"}) == (
        midnight
    )
    page = generate_latest(registry).decode()
    assert page.count(f"{name}{{") == 2  # not compat/old-x, nor the undated routes
    assert metrics.renderer.render() == generate_latest(registry)
    # A reload that moves main's route off old-x takes its series with it.
    moved = load(CONFIG.replace("- {key: main, model: old-x}", "- {key: main, model: new-x}"))
    removed = [r for r in config.all_routes() if r.id not in {n.id for n in moved.all_routes()}]
    metrics.reconfigure(moved, removed, [])
    assert registry.get_sample_value(name, LABELS) is None
    assert generate_latest(registry).decode().count(f"{name}{{") == 1
