"""litellm, loaded once and off the event loop, configured for a router that fails over itself.

`import litellm` costs about 3.6 s and, unless LITELLM_LOCAL_MODEL_COST_MAP is set before
it, downloads a cost map with retries (litellm-notes.md). So it is imported here only,
lazily, in a worker thread (`load()`), and never on the passthrough path. Its own retries,
callbacks and logging are turned off once at load: the router retries, fails over and
logs, and litellm doing it too would multiply attempts and leak prompts into its logs.
Per-request settings (key, base URL, timeout) travel as call arguments, never as globals.

litellm is the `translate` extra: `available()` says whether it is installed, without
importing it, and `litellm_providers()` names the providers it knows, for the config
loader. What the router uses of litellm's internals is in `litellm_internals.py`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from router.types import TRANSLATE_EXTRA, Key
from router.upstream.translate import egress, litellm_internals

_lock = threading.Lock()
_litellm: ModuleType | None = None


def _import() -> ModuleType:
    """litellm, configured; ImportError when it is not installed (checked without trying
    the import again, which would search sys.path on every call)."""
    global _litellm
    if _litellm is None and not available():
        raise ImportError(f"litellm is not installed: {TRANSLATE_EXTRA}")
    with _lock:  # several first requests may race here; one import configures it
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            # litellm counts a stream's tokens for its own cost figure (which the router
            # does not use) with a model's Hugging Face tokenizer, fetched from
            # huggingface.co by a blocking request on the event loop: a llama model
            # through litellm 1.104 stalled every request for 46 s where DNS hung.
            # Offline, the fetch fails at once and litellm counts another way.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            # Its table of Anthropic beta headers is fetched from GitHub on the first
            # request that sends one (a blocking httpx.get, 5 s timeout): the bundled copy.
            os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
            # And whatever else a newer litellm would fetch on its own (1.110 and later).
            os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
            import litellm

            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners
            litellm.telemetry = False  # read by older litellm versions only
            litellm.num_retries = 0
            litellm.success_callback = []
            litellm.failure_callback = []
            litellm.callbacks = []
            # A stream is not re-assembled at its end for loggers nobody registered.
            # (turn_off_message_logging stays off: it only redacts what callbacks get,
            # and there are none, at the cost of a deep copy of every request.)
            litellm.disable_streaming_logging = True
            _quiet_own_handlers()
            litellm_internals.follow_no_redirects()
            litellm_internals.close_failed_tunnels()
            litellm_internals.bound_answers()
            _litellm = litellm
        return _litellm


def _quiet_own_handlers() -> None:
    """litellm writes to stderr through handlers of its own, past the router's redacting
    log: without them its records go up to the root logger, which the router's log
    configuration (telemetry/stdlib.py) formats and redacts."""
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                logger.removeHandler(handler)
        logger.propagate = True


async def load() -> ModuleType:
    """litellm, imported in a worker thread on first use so the event loop keeps serving."""
    if _litellm is not None:
        return _litellm
    return await asyncio.to_thread(_import)


async def preload() -> None:
    """Warm litellm at startup (when some route needs translation) instead of on a request."""
    await load()


async def shutdown() -> None:
    """Close the HTTP clients litellm cached and the keys' own (`egress.py`), at app
    shutdown (a no-op if litellm was never loaded)."""
    if _litellm is not None:
        await egress.close()
        await _litellm.close_litellm_async_clients()


async def retire(keys: Iterable[Key]) -> None:
    """After a reload: close the keys' own clients (`egress.py`) the new config's `keys`
    no longer name, once no request uses them."""
    if _litellm is not None:
        await egress.retire(keys)


def token_count(model: str, messages: list[Any]) -> int:
    """litellm's count of `messages` for `model` (as gpt-4o's when litellm does not know
    the model), or -1 when litellm is not installed or cannot count them. Blocking: the
    first call imports litellm and loads tokenizer files, so call it in a worker thread."""
    try:
        lib = _import()
    except ImportError:
        return -1
    # litellm raises many kinds of errors for a model or message shape it does not know.
    for name in (model, "gpt-4o"):
        try:
            return int(lib.token_counter(model=name, messages=messages))
        except Exception:
            continue
    return -1


@functools.cache
def available() -> bool:
    """Whether litellm is installed (the `translate` extra), found without importing it."""
    return _package_dir() is not None


def _package_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):  # a broken install, or an import hook that refuses it
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


_ENUM_MEMBER = re.compile(r'^    [A-Z0-9_]+ = "([a-z0-9_.-]+)"$', re.MULTILINE)
_PROVIDER_NAME = re.compile(r"^[a-z0-9_]+$")


@functools.cache
def litellm_providers() -> frozenset[str]:
    """Provider names litellm accepts as `<provider>/<model>`, read from its package files.

    Two sources, both read as text (about 40 ms, no import): the `LlmProviders` enum,
    which is litellm's own list (it includes providers with no priced model, such as
    `openrouter` and `hosted_vllm`), and the `litellm_provider` field of its bundled
    price map. Price-map names with a dash (`vertex_ai-language-models`) are
    cost-accounting groups, not providers, and are left out.
    """
    package = _package_dir()
    if package is None:
        return frozenset()
    names: set[str] = set()
    types_file = package / "types" / "utils.py"
    if types_file.is_file():
        source = types_file.read_text(encoding="utf-8")
        start = source.find("class LlmProviders(")
        if start >= 0:
            end = source.find("\nclass ", start + 1)
            names.update(_ENUM_MEMBER.findall(source[start : end if end > 0 else None]))
    prices = package / "model_prices_and_context_window_backup.json"
    if prices.is_file():
        with prices.open(encoding="utf-8") as handle:
            for entry in json.load(handle).values():
                provider = entry.get("litellm_provider") if isinstance(entry, dict) else None
                if isinstance(provider, str) and _PROVIDER_NAME.match(provider):
                    names.add(provider)
    return frozenset(names)
