"""router/config/model_data.json, written from litellm's model table.

The router ships prices, context windows and capability flags so that they need no
litellm (the `translate` extra). This keeps, from litellm's
`model_prices_and_context_window_backup.json`, only the models of the providers the
config accepts without litellm or names by default (openai, azure, anthropic, gemini),
only the modes the router serves (chat, embedding, responses), and only the fields
`catalog.py` and routing read. The file records litellm's version and the date, so that
`catalog.py` can let an installed, newer litellm's table win.

    python -m router.config.model_data_gen                      # from the installed litellm
    python -m router.config.model_data_gen --source T.json --version 1.110.2 --out X.json

Run it with the newest litellm of pyproject's `translate` range installed, and commit
the result. It reads the table as a file and never imports litellm.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LITELLM_TABLE = "model_prices_and_context_window_backup.json"
OUT = Path(__file__).with_name("model_data.json")
PROVIDERS = frozenset({"openai", "azure", "anthropic", "gemini"})
MODES = frozenset({"chat", "embedding", "responses"})
FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "max_input_tokens",
    "max_output_tokens",
    "mode",
    "litellm_provider",
    "supports_function_calling",
    "supports_vision",
    "supports_response_schema",
    "supports_prompt_caching",
    "deprecation_date",  # the provider's announced retirement (YYYY-MM-DD): check warns
)


def reduce(table: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The models and fields the router reads, in name order."""
    kept: dict[str, dict[str, Any]] = {}
    for name in sorted(table):
        entry = table[name]
        if not isinstance(entry, dict):
            continue
        if entry.get("litellm_provider") not in PROVIDERS or entry.get("mode") not in MODES:
            continue
        kept[name] = {field: entry[field] for field in FIELDS if entry.get(field) is not None}
    return kept


def render(models: Mapping[str, Mapping[str, Any]], version: str, date: str) -> str:
    """The file's text: one model a line, so that a regeneration diffs model by model."""
    source = {"litellm": version, "file": LITELLM_TABLE, "generated": date}
    lines = [
        "{",
        f'"source": {json.dumps(source, sort_keys=True)},',
        '"models": {',
    ]
    entries = [
        f"{json.dumps(name)}: {json.dumps(entry, sort_keys=True, separators=(',', ':'))}"
        for name, entry in models.items()
    ]
    lines.append(",\n".join(entries))
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def installed_table() -> tuple[Path, str]:
    """The installed litellm's table file and version, found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("litellm is not installed; pass --source and --version")
    path = Path(next(iter(spec.submodule_search_locations))) / LITELLM_TABLE
    return path, importlib.metadata.version("litellm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.config.model_data_gen")
    parser.add_argument("--source", type=Path, help=f"litellm's {LITELLM_TABLE}")
    parser.add_argument("--version", help="the litellm version that table comes from")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    args = parser.parse_args(argv)
    if (args.source is None) != (args.version is None):
        parser.error("--source and --version go together")
    source, version = (args.source, args.version) if args.source else installed_table()
    with source.open(encoding="utf-8") as handle:
        table = json.load(handle)
    if not isinstance(table, dict):
        raise SystemExit(f"{source}: expected a JSON object of models")
    models = reduce(table)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    args.out.write_text(render(models, version, today), encoding="utf-8")
    print(f"{args.out}: {len(models)} models from litellm {version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
