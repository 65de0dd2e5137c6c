"""The configuration examples people copy from README.md and routes.yaml load as written."""

from __future__ import annotations

import re
import tomllib

import pytest

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
    lines = text.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    config = parse_config(
        "\n".join(line[indent:] for line in lines), source="README.md", environ=FAKE_ENV
    )
    assert config.models


def test_the_shipped_routes_yaml_loads():
    config = parse_config(
        (REPO / "routes.yaml").read_text(encoding="utf-8"), source="routes.yaml", environ=FAKE_ENV
    )
    assert set(config.models) == {"gpt-4o", "gpt-4o-mini"}
    assert config.models["gpt-4o"].chain == ("gpt-4o", "gpt-4o-mini")


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
