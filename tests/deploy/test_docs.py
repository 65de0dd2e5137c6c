"""The configuration examples people copy from README.md and routes.yaml load as written."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from router.config import parse_config
from tests.conftest import REPO

FAKE_ENV = {
    name: f"test-{name.lower()}-0123456789abcdef"
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_2",
        "GROQ_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "AZURE_OPENAI_KEY",
        "ROUTER_CLIENT_KEY",
    )
}


def readme_configs() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [block for block in blocks if "keys:" in block and "models:" in block]


def test_readme_has_config_examples():
    assert len(readme_configs()) >= 2


@pytest.mark.parametrize("text", readme_configs())
def test_every_readme_config_example_loads(text: str):
    # Indented blocks (inside list items) are dedented as a reader would paste them.
    config = parse_config(_dedented(text), source="README.md", environ=FAKE_ENV)
    assert config.models


def _dedented(text: str) -> str:
    lines = text.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def _shipped_examples() -> list[Any]:
    deploy = REPO / "deploy"
    configmap = yaml.safe_load((deploy / "kubernetes" / "configmap.yaml").read_text())
    examples = [
        pytest.param((REPO / "routes.yaml").read_text(encoding="utf-8"), id="routes.yaml"),
        pytest.param((deploy / "routes.example.yaml").read_text(), id="compose"),
        pytest.param((deploy / "routes.replicas.yaml").read_text(), id="compose-replicas"),
        pytest.param(configmap["data"]["routes.yaml"], id="kubernetes-configmap"),
    ]
    examples += [
        pytest.param(_dedented(text), id=f"README-{n}") for n, text in enumerate(readme_configs())
    ]
    return examples


@pytest.mark.parametrize("text", _shipped_examples())
def test_no_shipped_example_routes_to_a_model_its_provider_retires(text: str):
    """What people copy must not be warned about by `check` itself: litellm's model data
    (router/config/model_data.json, regenerated with litellm) dates gpt-4o and
    gpt-4o-mini to 2027-01-14, which the examples used until December 2026."""
    environ = {**FAKE_ENV, "REDIS_URL": "redis://127.0.0.1:6379/0"}  # the configmap's
    config = parse_config(text, source="example", environ=environ)
    assert [warning for warning in config.warnings if " retires " in warning] == []


def test_the_shipped_routes_yaml_loads():
    config = parse_config(
        (REPO / "routes.yaml").read_text(encoding="utf-8"), source="routes.yaml", environ=FAKE_ENV
    )
    assert set(config.models) == {"gpt-5.4", "gpt-5.4-mini"}
    assert config.models["gpt-5.4"].chain == ("gpt-5.4", "gpt-5.4-mini")


def test_the_tuning_shown_in_routes_yaml_is_the_defaults():
    """routes.yaml's commented tuning block, uncommented, loads, and says what the
    defaults are: a default changed in code and not in the example fails here."""
    text = (REPO / "routes.yaml").read_text(encoding="utf-8")
    shown = text.split("# Optional tuning", 1)[1].split("\n", 1)[1]
    block = "\n".join(line[2:] for line in shown.splitlines() if line.startswith("# "))
    document = text.split("# Optional tuning", 1)[0] + block
    tuned = parse_config(document, source="routes.yaml", environ=FAKE_ENV)
    plain = parse_config(text, source="routes.yaml", environ=FAKE_ENV)
    sections = [name for name in ("timeouts", "failover", "limits") if f"\n{name}:" in "\n" + block]
    assert sections == ["timeouts", "failover", "limits"]
    for name in sections:
        assert getattr(tuned, name) == getattr(plain, name), name


def _tracked_text() -> dict[str, str]:
    """README, the example configs, deploy/ and the package's own messages."""
    paths = [REPO / "README.md", REPO / "routes.yaml"]
    paths += sorted((REPO / "deploy").rglob("*.yaml")) + sorted((REPO / "router").rglob("*.py"))
    return {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in paths}


def test_every_install_hint_names_this_distribution_and_a_real_extra():
    """`llm-router` is the command, and another project's name on PyPI: a hint that says
    `pip install 'llm-router[otel]'` sends a user to someone else's package."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    name = pyproject["project"]["name"]
    extras = set(pyproject["project"]["optional-dependencies"])
    hints = [
        (file, dist, extra)
        for file, text in _tracked_text().items()
        for dist, extra in re.findall(r"pip install '([\w.{}-]+)\[(\w+)\]'", text)
    ]
    assert len(hints) >= 4  # README's, routes.yaml's and the error messages' hints
    wrong = [
        f"{file}: {dist}[{extra}]"
        for file, dist, extra in hints
        if dist not in (name, "{DISTRIBUTION}", ".") or extra not in extras
    ]
    assert wrong == []
