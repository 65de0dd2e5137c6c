"""Where litellm sends a route: its model string, key, base URL and per-call settings.

Our config follows each provider's own SDK for `api_base` (router/types.py); litellm has
its own conventions, read from its source (1.106; the same from 1.104 to 1.110):

- anthropic: the host only, as ANTHROPIC_BASE_URL. litellm appends `/v1/messages` to a
  custom base unless it already ends with it (`main._complete_anthropic`), so ours passes
  through unchanged.
- gemini (AI Studio): the host only, default `https://generativelanguage.googleapis.com`.
  litellm builds `{api_base}/models/{model}:generateContent` (and
  `:streamGenerateContent?alt=sse`) from a custom base
  (`vertex_llm_base._check_custom_proxy`), so the API version must be in it: a bare host
  gets `/v1beta`; a base with a path (`.../v1alpha`) is used as given.
- openai (`.../v1`), azure (the resource endpoint, plus `api_version`) and every other
  provider: passed as given; an empty base leaves litellm its provider default.

The model is `<provider>/<route.model>`; a route model already starting with
`<provider>/` is taken as is (litellm's own rule in `get_llm_provider`), so
`openrouter` + `anthropic/claude-sonnet-4` becomes `openrouter/anthropic/claude-sonnet-4`.
Key and base go in every call, never through environment variables or litellm globals;
so does the client of a key with its own `proxy:` (`egress.py`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from router.types import Route
from router.upstream.translate.egress import client_arguments
from router.upstream.translate.litellm_internals import SKIP_MCP

GEMINI_API_BASE = "https://generativelanguage.googleapis.com"
_GEMINI_API_VERSION = "v1beta"


def litellm_model(provider: str, model: str) -> str:
    return model if model.startswith(f"{provider}/") else f"{provider}/{model}"


def litellm_api_base(provider: str, api_base: str) -> str | None:
    base = api_base.rstrip("/")
    if not base:
        return GEMINI_API_BASE + "/" + _GEMINI_API_VERSION if provider == "gemini" else None
    if provider == "gemini" and urlparse(base).path in ("", "/"):
        return f"{base}/{_GEMINI_API_VERSION}"
    return base


def call_arguments(route: Route, *, timeout: float) -> dict[str, Any]:
    """The litellm arguments that say where and how to call, for any operation."""
    key = route.key
    arguments: dict[str, Any] = {
        "model": litellm_model(key.provider, route.model),
        "api_key": key.api_key,
        "timeout": timeout,
        # The router retries and fails over itself; a retry inside litellm would hide
        # the first failure from the classifier and spend the request's deadline.
        "num_retries": 0,
        "max_retries": 0,
        # A parameter this provider lacks (logit_bias on Anthropic, say) is dropped, as
        # a client of a multi-provider model expects, instead of failing the request.
        "drop_params": True,
        **SKIP_MCP,
    }
    api_base = litellm_api_base(key.provider, key.api_base)
    arguments.update(client_arguments(key, api_base))  # the key's `proxy:` (egress.py)
    if api_base is not None:
        arguments["api_base"] = api_base
    if key.api_version:
        arguments["api_version"] = key.api_version
    if key.headers:
        arguments["extra_headers"] = dict(key.headers)  # routes.yaml's, on every request
    return arguments
