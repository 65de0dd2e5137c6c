"""The image and its manifests, without a container engine (CI has none): the compose file
and the Kubernetes manifests meet their published schemas, the build context carries only
what the Dockerfile copies, the image's packages are pinned, and its health check follows
the port routes.yaml sets, through a real socket.

Schemas, offline: the compose specification's JSON Schema as vendored by check-jsonschema
(`--builtin-schema vendor.compose-spec`, from compose-spec/compose-spec's
schema/compose-spec.json), and Kubernetes' own OpenAPI-derived JSON Schemas as shipped by
kubernetes-validate (its `-strict` flavour: an unknown field is an error). Both are in the
`test` extra.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import socket
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from router.config import parse_config
from router.server import start
from tests.conftest import REPO
from tests.deploy.pins import pins_in

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


# --------------------------------------------------------------------------- build context


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore line as Docker reads it: Go's filepath.Match, plus `**` for any
    number of directories; a pattern that matches a directory takes what is inside."""
    parts = []
    for piece in re.split(r"(\*\*/?|\*|\?|\[[^]]*\])", pattern.strip("/")):
        if piece.startswith("**"):
            parts.append("(?:.*/)?" if piece.endswith("/") else ".*")
        elif piece == "*":
            parts.append("[^/]*")
        elif piece == "?":
            parts.append("[^/]")
        elif piece.startswith("["):
            parts.append(piece)
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts) + "(?:/.*)?")


def in_context(path: str, ignore_file: Path) -> bool:
    """Whether the build context carries `path`: the last matching line decides."""
    kept = True
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if _docker_pattern(line.lstrip("!")).fullmatch(path):
            kept = negated
    return kept


IGNORE = DEPLOY / "Dockerfile.dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/lib/python3.11/site-packages/aiohttp/__init__.py",
        ".env",
        "deploy/.env",
        ".git/HEAD",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/0.5.0/123",
        "router/__pycache__/cli.cpython-311.pyc",
        "router/config/__pycache__/fields.cpython-311.pyc",
        "router/.env",
        "llm_router.egg-info/PKG-INFO",
        "tests/integration/test_cli.py",
        "bench/run.py",
        "deploy/kubernetes/secret.example.yaml",
        "deploy/routes.example.yaml",
        "routes.yaml",
        "build/lib/router/cli.py",
        "pytest-of-root/pytest-0/test_x0/routes.yaml",
    ],
)
def test_the_build_context_leaves_out_secrets_environments_caches_and_temp_files(
    path: str,
) -> None:
    assert not in_context(path, IGNORE)


def test_the_build_context_holds_every_file_the_dockerfile_copies() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", "LICENSE", "deploy/constraints.txt", "router"]
    files = [p for p in (REPO / "router").rglob("*") if p.is_file() and "__pycache__" not in str(p)]
    wanted = [Path(s) for s in copied[:-1]] + [p.relative_to(REPO) for p in files]
    assert [str(p) for p in wanted if not in_context(p.as_posix(), IGNORE)] == []
    assert in_context("router/config/routes.schema.json", IGNORE)


def test_the_docker_pattern_reader_follows_dockers_rules() -> None:
    """The reader the two tests above trust, on the cases Docker's documentation gives."""
    assert _docker_pattern("*/temp*").fullmatch("somedir/temporary.txt")
    assert not _docker_pattern("*/temp*").fullmatch("somedir/sub/temporary.txt")
    assert _docker_pattern("*/*/temp*").fullmatch("somedir/subdir/temporary.txt")
    assert _docker_pattern("temp?").fullmatch("tempa")
    assert _docker_pattern("**/*.go").fullmatch("a/b/c.go")
    assert _docker_pattern("**/*.go").fullmatch("c.go")
    assert _docker_pattern("router").fullmatch("router/a/b.py")  # a directory's contents
    assert not _docker_pattern("router").fullmatch("routers/a.py")


# --------------------------------------------------------------------------- constraints

# The markers of the image: Linux, CPython 3.11 (deploy/Dockerfile's FROM).
IMAGE_MARKERS = {"sys_platform": "linux", "python_version": "3.11", "extra": ""}


def constraints() -> dict[str, str]:
    return pins_in(DEPLOY / "constraints.txt")


IMAGE_EXTRAS = ("redis", "translate")  # what the image installs: any routes.yaml runs there


def runtime_requirements() -> list[Requirement]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lines = [*project["dependencies"], *(line for name in IMAGE_EXTRAS for line in extras[name])]
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(IMAGE_MARKERS)]


def test_the_image_installs_with_the_constraints_file() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if "pip install" in line)
    assert "-c constraints.txt" in install and f'".[{",".join(IMAGE_EXTRAS)}]"' in install
    assert "deploy/constraints.py" in dockerfile  # says how to regenerate it


def test_the_constraints_pin_every_runtime_requirement_within_pyproject() -> None:
    pins = constraints()
    assert list(pins) == sorted(pins)
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned: regenerate deploy/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject's {requirement.specifier}"
        )
    for test_only in ("pytest", "ruff", "trustme", "kubernetes-validate", "check-jsonschema"):
        assert test_only not in pins


def test_the_constraints_are_closed_under_the_pinned_packages_own_requirements() -> None:
    """Where this environment has a pinned version installed, whatever that version
    requires on the image is pinned too: nothing the image installs floats."""
    pins = constraints()
    checked = 0
    for name, version in pins.items():
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if distribution.version != version:
            continue
        checked += 1
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(IMAGE_MARKERS):
                assert canonicalize_name(requirement.name) in pins, f"{name} needs {line}"
    assert checked >= len(pins) // 2, "too few pins installed here to check"


# --------------------------------------------------------------------------- health check


def healthcheck_command() -> list[str]:
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(x for x in dockerfile.splitlines() if x.startswith("HEALTHCHECK"))
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


def test_the_health_check_names_no_port() -> None:
    command = healthcheck_command()
    assert command == ["python", "-m", "router.probe"]
    assert not re.search(r"\b4000\b", " ".join(command))
    assert "LLM_ROUTER_CONFIG=/etc/llm-router/routes.yaml" in (DEPLOY / "Dockerfile").read_text()


def _free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def _run(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command[1:],
        stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_the_health_check_follows_the_port_routes_yaml_sets(
    tmp_path: Path, unused_tcp_port_factory: Any
) -> None:
    port, other = unused_tcp_port_factory(), unused_tcp_port_factory()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "server: {host: 0.0.0.0, port: '${ROUTER_PORT:-4000}', allow_unauthenticated: true}\n"
        "keys: {a: {provider: openai, api_base: 'http://127.0.0.1:9/v1', api_key: sk-a-1234567}}\n"
        "models: {m: {routes: [{key: a, model: m}]}}\n"
    )
    environ = {"ROUTER_PORT": str(port)}
    config = parse_config(routes.read_text(), source="routes.yaml", environ=environ)
    runner = await start(config, "127.0.0.1", config.server.port)
    command = healthcheck_command()
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")},
        "PYTHONPATH": str(REPO),
        "LLM_ROUTER_CONFIG": str(routes),
        # A proxy for the router's egress must not carry the probe.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
    }
    try:
        assert await _run(command, {**env, **environ}) == (0, "")
        # Another port in the environment: the probe goes there, and finds nothing.
        code, err = await _run(command, {**env, "ROUTER_PORT": str(other)})
        assert code == 1 and err.startswith(f"unhealthy: http://127.0.0.1:{other}/healthz")
        default_free = _free(4000)
        code, err = await _run(command, {**env, "ROUTER_PORT": ""})  # the default, 4000
        if default_free:
            assert code == 1 and "127.0.0.1:4000/healthz" in err
        else:  # something serves there (README's demo, left running): the probe went there
            assert code == 0 or "127.0.0.1:4000/healthz" in err
        # serve --port given on the command line: the probe takes the same flag.
        code, _ = await _run([*command, "--port", str(port)], {**env, "ROUTER_PORT": "1"})
        assert code == 0
    finally:
        await runner.cleanup()
    code, err = await _run(command, {**env, **environ})  # the router has stopped
    assert code == 1 and "Connection refused" in err, err


@pytest.mark.parametrize(
    ("server", "said"),
    [
        ("{port: '${NOPE}'}", "unhealthy: NOPE is not set (server: ${NOPE})"),
        ("{port: 0}", "unhealthy: server.port 0 cannot be probed (0 picks a free port)"),
        ("{port: four}", "unhealthy: server.port is not a port number: 'four'"),
    ],
)
def test_a_port_the_probe_cannot_use_is_one_clear_line(
    tmp_path: Path, server: str, said: str
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"server: {server}\nkeys: {{}}\n")
    env = {k: v for k, v in os.environ.items() if k != "NOPE"}
    finished = subprocess.run(
        [sys.executable, "-m", "router.probe", "--config", str(routes)],
        capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=30,
    )  # fmt: skip
    assert (finished.returncode, finished.stderr) == (1, said + "\n")


def test_a_fifo_at_the_config_path_is_one_clear_line_not_a_hung_probe(tmp_path: Path) -> None:
    """A plain read waited for a writer past the probe's --timeout, until the container
    runtime killed it."""
    routes = tmp_path / "routes.yaml"
    os.mkfifo(routes)
    finished = subprocess.run(
        [sys.executable, "-m", "router.probe", "--config", str(routes), "--timeout", "1"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30,
    )  # fmt: skip
    said = f"unhealthy: {routes}: cannot read: not a regular file (a FIFO)\n"
    assert (finished.returncode, finished.stderr) == (1, said)
