"""routes.yaml's JSON Schema: current, met by every example, and rejecting what the loader does."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from router.config import parse_config
from router.config.schema import build_schema, render_schema, shipped_schema
from router.errors import ConfigError
from tests.conftest import REPO
from tests.deploy.test_docs import FAKE_ENV, readme_configs

VALIDATOR = jsonschema.Draft202012Validator(build_schema())


def schema_errors(document: Any) -> list[str]:
    return [f"{error.json_path}: {error.message}" for error in VALIDATOR.iter_errors(document)]


def test_the_committed_schema_is_the_generated_one():
    # On failure: python -m router.config.schema > router/config/routes.schema.json
    assert shipped_schema() == render_schema()


def test_the_schema_is_a_valid_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(shipped_schema()))


def _dedent(text: str) -> str:
    lines = text.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def example_configs() -> list[Any]:
    files = ["routes.yaml", "deploy/routes.example.yaml", "deploy/routes.replicas.yaml"]
    examples = [pytest.param((REPO / name).read_text(encoding="utf-8"), id=name) for name in files]
    configmap = yaml.safe_load((REPO / "deploy/kubernetes/configmap.yaml").read_text("utf-8"))
    examples.append(pytest.param(configmap["data"]["routes.yaml"], id="configmap"))
    examples += [
        pytest.param(_dedent(text), id=f"README-{index}")
        for index, text in enumerate(readme_configs())
    ]
    return examples


@pytest.mark.parametrize("text", example_configs())
def test_every_example_config_meets_the_schema(text: str):
    assert schema_errors(yaml.safe_load(text)) == []


BASE: dict[str, Any] = {
    "keys": {"main": {"provider": "openai", "api_key": "sk-test-aaaaaaaaaaaaaaaa1234"}},
    "models": {
        "gpt-4o": {"routes": [{"key": "main", "model": "gpt-4o"}]},
        "mini": {"routes": [{"key": "main", "model": "gpt-4o-mini"}]},
    },
}


def _route(document: dict[str, Any]) -> dict[str, Any]:
    route: dict[str, Any] = document["models"]["gpt-4o"]["routes"][0]
    return route


Change = Callable[[dict[str, Any]], object]

REJECTED: dict[str, Change] = {
    "unknown top-level field": lambda d: d.update(sever={"port": 4000}),
    "unknown server field": lambda d: d.update(server={"prot": 4000}),
    "port as text": lambda d: d.update(server={"port": "four thousand"}),
    "port out of range": lambda d: d.update(server={"port": 70000}),
    "empty host": lambda d: d.update(server={"host": ""}),
    "allow_unauthenticated as text": lambda d: d.update(server={"allow_unauthenticated": "on"}),
    "negative drain_grace": lambda d: d.update(server={"drain_grace": -1}),
    "negative timeout": lambda d: d.update(timeouts={"connect": -1}),
    "zero max_attempts": lambda d: d.update(failover={"max_attempts": 0}),
    "fractional count": lambda d: d.update(limits={"max_headers": 1.5}),
    "failure rate over 1": lambda d: d.update(failover={"breaker_failure_rate": 1.5}),
    "unknown timeouts field": lambda d: d.update(timeouts={"first_bytes": 10}),
    "bad state.backend": lambda d: d.update(state={"backend": "disk"}),
    "redis without url": lambda d: d.update(state={"backend": "redis"}),
    "url with memory": lambda d: d.update(state={"url": "redis://localhost"}),
    "snapshot with redis": lambda d: d.update(
        state={"backend": "redis", "url": "redis://localhost", "snapshot": "state.json"}
    ),
    "unknown telemetry field": lambda d: d.update(telemetry={"tracing": {}}),
    "traces endpoint without scheme": lambda d: d.update(
        telemetry={"traces": {"endpoint": "collector:4318"}}
    ),
    "sample_rate over 1": lambda d: d.update(telemetry={"traces": {"sample_rate": 2}}),
    "missing keys": lambda d: d.pop("keys"),
    "missing models": lambda d: d.pop("models"),
    "no models": lambda d: d.update(models={}),
    "key without api_key": lambda d: d["keys"]["main"].pop("api_key"),
    "unknown key field": lambda d: d["keys"]["main"].update(api_bse="https://x.example"),
    "key name with a slash": lambda d: d["keys"].update({"a/b": d["keys"]["main"]}),
    "api_base without scheme": lambda d: d["keys"]["main"].update(api_base="api.example.com"),
    "stream_usage as text": lambda d: d["keys"]["main"].update(stream_usage="yes"),
    "empty budget": lambda d: d["keys"]["main"].update(budget={}),
    "negative budget": lambda d: d["keys"]["main"].update(budget={"usd_per_day": -5}),
    "unknown model field": lambda d: d["models"]["gpt-4o"].update(fallbacks=["mini"]),
    "model without routes or fallback": lambda d: d["models"]["mini"].pop("routes"),
    "route without model": lambda d: _route(d).pop("model"),
    "empty route model": lambda d: _route(d).update(model=""),
    "a route model holding a line break": lambda d: _route(d).update(model="gpt-4o\r\nx-a: 1"),
    "a route model holding a control character": lambda d: _route(d).update(model="gpt\x01"),
    "key name with a control character": lambda d: d["keys"].update({"a\x01b": d["keys"]["main"]}),
    "unknown route field": lambda d: _route(d).update(wieght=2),
    "priority 0": lambda d: _route(d).update(priority=0),
    "negative weight": lambda d: _route(d).update(weight=-1),
    "price without output": lambda d: _route(d).update(price={"input_per_mtok": 1}),
    "negative price": lambda d: _route(d).update(
        price={"input_per_mtok": -1, "output_per_mtok": 1}
    ),
    "zero max_input_tokens": lambda d: _route(d).update(max_input_tokens=0),
    "fallback neither cheaper nor a list": lambda d: d["models"]["gpt-4o"].update(
        fallback="cheapest"
    ),
    "timeouts.request on a route": lambda d: _route(d).update(timeouts={"request": 5}),
    "unknown route timeouts field": lambda d: _route(d).update(timeouts={"first_bite": 5}),
    "negative model timeout": lambda d: d["models"]["gpt-4o"].update(timeouts={"idle": -1}),
    "a credential key header": lambda d: d["keys"]["main"].update(headers={"X-Api-Key": "k"}),
    "a hop-by-hop key header": lambda d: d["keys"]["main"].update(headers={"Connection": "x"}),
    "a key header named with a space": lambda d: d["keys"]["main"].update(headers={"A B": "x"}),
    "a key header value not a string": lambda d: d["keys"]["main"].update(headers={"X-A": [1]}),
    "model listed twice": lambda d: d["models"]["gpt-4o"].update(context_fallback=["mini", "mini"]),
}

ACCEPTED: dict[str, Change] = {
    "the base": lambda d: None,
    "a variable for a port": lambda d: d.update(server={"port": "${PORT:-4000}"}),
    "a variable for a boolean": lambda d: d["keys"]["main"].update(stream_usage="${USAGE:-true}"),
    "fallback cheaper": lambda d: [
        _route(d).update(price={"input_per_mtok": 5, "output_per_mtok": 15}),
        d["models"]["mini"]["routes"][0].update(
            price={"input_per_mtok": 0.15, "output_per_mtok": 0.6}
        ),
        d["models"]["gpt-4o"].update(fallback="cheaper"),
    ],
    "a model that is only a fallback": lambda d: d["models"].update(alias={"fallback": ["mini"]}),
    "redis state": lambda d: d.update(state={"backend": "redis", "url": "${REDIS_URL}"}),
    "timeouts on a model and a route": lambda d: [
        d["models"]["gpt-4o"].update(timeouts={"first_byte": 600, "request": 900}),
        _route(d).update(timeouts={"connect": 2, "idle": 120}),
    ],
    "key headers": lambda d: d["keys"]["main"].update(
        headers={"HTTP-Referer": "https://app.example", "OpenAI-Organization": "${ORG:-org-1}"}
    ),
    "traces": lambda d: d.update(
        telemetry={"traces": {"endpoint": "http://collector:4318", "sample_rate": 0.1}}
    ),
    "every tuning section": lambda d: d.update(
        timeouts={"first_byte": 300},
        failover={"breaker_failure_rate": 1},
        limits={"max_headers": 50},
    ),
}


def _changed(change: Change) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    change(document)
    return document


def _loads(document: dict[str, Any]) -> bool:
    environ = {**FAKE_ENV, "REDIS_URL": "redis://127.0.0.1:1"}
    try:
        parse_config(yaml.safe_dump(document), source="routes.yaml", environ=environ)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("change", REJECTED.values(), ids=REJECTED.keys())
def test_the_loader_and_the_schema_both_reject(change: Change):
    document = _changed(change)
    assert not _loads(document)
    assert schema_errors(document)


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_loader_and_the_schema_both_accept(change: Change):
    document = _changed(change)
    assert _loads(document)
    assert schema_errors(document) == []


def test_the_example_routes_yaml_names_the_schema_for_editors():
    first = (REPO / "routes.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (REPO / first.split("=", 1)[1]).read_text(encoding="utf-8") == render_schema()
