"""The image's manifests, without a container engine (CI has none): the compose file and
the Kubernetes manifests meet their published schemas, and a broken copy does not.

Schemas, offline: the compose specification's JSON Schema as vendored by check-jsonschema
(`--builtin-schema vendor.compose-spec`, from compose-spec/compose-spec's
schema/compose-spec.json), and Kubernetes' own OpenAPI-derived JSON Schemas as shipped by
kubernetes-validate (its `-strict` flavour: an unknown field is an error). Both are in the
`test` extra.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# Native sidecars (an init container with restartPolicy: Always) need 1.29.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
NOT_KUBERNETES = {"ServiceMonitor"}  # the Prometheus Operator's CRD: no published schema here


# --------------------------------------------------------------------------- compose


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def compose_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    )


def test_the_compose_file_meets_the_compose_specification() -> None:
    assert compose_schema()["title"] == "Compose Specification"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose_errors(compose) == []


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        pytest.param(("services", "router", "healthchek"), {"test": "x"}, "healthchek", id="typo"),
        pytest.param(("services", "router", "volumes"), {"./a": "/b"}, "volumes", id="type"),
        pytest.param(("services", "router", "ports"), "4000:4000", "ports", id="not-a-list"),
    ],
)
def test_a_broken_compose_file_is_rejected(path: tuple[str, ...], value: Any, named: str) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    *parents, last = path
    node = compose
    for name in parents:
        node = node[name]
    node[last] = value
    errors = compose_errors(compose)
    assert errors and any(named in error for error in errors), errors


# --------------------------------------------------------------------------- kubernetes


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_manifests_meet_kubernetes_schemas(version: str) -> None:
    checked = []
    for _, document in manifests():
        if document["kind"] in NOT_KUBERNETES:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(document, version, strict=True)
            continue
        kubernetes_validate.validate(document, version, strict=True)
        checked.append(document["kind"])
    assert sorted(checked) == ["ConfigMap", "Deployment", "Secret", "Service"]


def _router_container(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers"] if c["name"] == "llm-router")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param(
            lambda c: c.update(livenesProbe=c.pop("livenessProbe")), "livenesProbe", id="typo"
        ),
        pytest.param(
            lambda c: c["ports"][0].update(containerPort="4000"), "containerPort", id="type"
        ),
        pytest.param(
            lambda c: c["env"][0]["valueFrom"]["secretKeyRef"].update(optional="yes"),
            "optional",
            id="nested-type",
        ),
    ],
)
def test_a_broken_manifest_is_rejected(change: Any, named: str) -> None:
    (deployment,) = [doc for _, doc in manifests() if doc["kind"] == "Deployment"]
    broken = copy.deepcopy(deployment)
    change(_router_container(broken))
    for version in KUBERNETES_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError) as caught:
            kubernetes_validate.validate(broken, version, strict=True)
        assert named in str(caught.value) or named in json.dumps(list(caught.value.path))
