"""The shipped model data (router/config/model_data.json): the script that makes it, and
which table wins when litellm is installed too."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from router.config import catalog
from router.config.model_data_gen import FIELDS
from router.types import Price
from tests.conftest import REPO

FABRICATED = {
    "sample_spec": {"litellm_provider": "one of ...", "mode": "one of ..."},
    "gpt-x": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 4e-06,
        "cache_read_input_token_cost": 1e-07,
        "max_input_tokens": 1000,
        "max_output_tokens": 100,
        "supports_vision": True,
        "supports_function_calling": True,
        "supports_web_search": True,  # a field the router does not read
        "deprecation_date": "2030-01-01",
    },
    "azure/embed-x": {"litellm_provider": "azure", "mode": "embedding", "max_input_tokens": 8191},
    "gemini/gem-x": {"litellm_provider": "gemini", "mode": "chat", "supports_vision": None},
    "claude-x": {"litellm_provider": "anthropic", "mode": "chat", "supports_prompt_caching": True},
    "gpt-image": {"litellm_provider": "openai", "mode": "image_generation"},
    "gpt-r": {"litellm_provider": "openai", "mode": "responses"},
    "bedrock/x": {"litellm_provider": "bedrock", "mode": "chat"},
    "vertex_ai/x": {"litellm_provider": "vertex_ai-language-models", "mode": "chat"},
}


def generate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.config.model_data_gen", *args],
        capture_output=True, text=True, cwd=REPO, timeout=30, check=False,
    )  # fmt: skip


def test_the_script_keeps_supported_providers_modes_and_fields(tmp_path):
    source = tmp_path / "table.json"
    source.write_text(json.dumps(FABRICATED))
    out = tmp_path / "model_data.json"
    done = generate(tmp_path, "--source", str(source), "--version", "1.2.3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["source"]["litellm"] == "1.2.3"
    assert data["source"]["file"] == "model_prices_and_context_window_backup.json"
    assert len(data["source"]["generated"]) == len("2026-01-31")
    assert list(data["models"]) == ["azure/embed-x", "claude-x", "gemini/gem-x", "gpt-r", "gpt-x"]
    assert data["models"]["gpt-x"] == {
        name: FABRICATED["gpt-x"][name] for name in FIELDS if name in FABRICATED["gpt-x"]
    }
    assert data["models"]["gemini/gem-x"] == {"litellm_provider": "gemini", "mode": "chat"}
    assert "5 models from litellm 1.2.3" in done.stderr


def test_the_script_wants_source_and_version_together(tmp_path):
    done = generate(tmp_path, "--source", str(tmp_path / "t.json"))
    assert done.returncode == 2 and "--source and --version go together" in done.stderr


def test_the_shipped_file_says_where_it_came_from():
    data = json.loads((REPO / "router/config/model_data.json").read_text())
    assert data["source"]["litellm"] and data["source"]["generated"]
    assert all(
        entry["litellm_provider"] in ("openai", "azure", "anthropic", "gemini")
        and entry["mode"] in ("chat", "embedding", "responses")
        and set(entry) <= set(FIELDS)
        for entry in data["models"].values()
    )


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped file with one model litellm has (gpt-4o, at a made-up price) and one it
    does not; `write(version)` sets the litellm version it says it came from."""
    path = tmp_path / "model_data.json"

    def write(version: str) -> None:
        models = {
            "gpt-4o": {"input_cost_per_token": 1.0, "output_cost_per_token": 2.0},
            "only-shipped": {"input_cost_per_token": 3.0, "output_cost_per_token": 4.0},
        }
        path.write_text(json.dumps({"source": {"litellm": version}, "models": models}))
        catalog.forget()

    monkeypatch.setattr(catalog, "SHIPPED", path)
    yield write
    catalog.forget()


def test_an_installed_litellm_at_least_as_new_wins(shipped):
    shipped(importlib.metadata.version("litellm"))
    assert catalog.facts("openai", "gpt-4o").price != Price(1.0, 2.0)  # litellm's price
    assert catalog.facts("openai", "only-shipped").price == Price(3.0, 4.0)  # a gap filled


def test_an_older_installed_litellm_only_fills_gaps(shipped):
    shipped("999.0.0")
    assert catalog.facts("openai", "gpt-4o").price == Price(1.0, 2.0)
    assert catalog.facts("openai", "gpt-4o-mini").price is not None  # litellm's, not shipped
