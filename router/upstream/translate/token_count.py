"""A Messages request's input tokens, counted here for models no Anthropic route serves.

`/v1/messages/count_tokens` passes through to Anthropic routes. A model served only by
translated routes (an OpenAI model behind `/v1/messages`) has no upstream that counts,
so the request is translated as it would be sent (`anthropic_litellm.py`: system, tool
calls and results, tools) and counted with litellm's `token_counter` for the route's
model: tiktoken for OpenAI models, litellm's own choice for others. Like Anthropic's own
count, the result is an estimate. Images count as litellm's default image size: the
counter would otherwise fetch image URLs, which a router must not do for a count.

Without litellm (not installed, or it cannot read the request), the count is the same
estimate the router uses for headroom, about 4 bytes of request body a token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from router.types import Route
from router.upstream.translate import runtime
from router.upstream.translate.anthropic_litellm import adapter, messages_request
from router.upstream.translate.endpoints import litellm_model

BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class TokenCount:
    input_tokens: int
    method: str  # "litellm" (a tokenizer's count) or "bytes" (the 4-bytes-a-token estimate)


async def count_input_tokens(route: Route, payload: dict[str, Any], body: bytes) -> TokenCount:
    """The input tokens of `payload` (an Anthropic count_tokens or Messages body) as
    `route`'s model would see them; counted in a worker thread, off the event loop."""
    try:
        lib = await runtime.load()
    except ImportError:
        return estimate(body)
    try:
        return TokenCount(await asyncio.to_thread(_count, lib, route, payload), "litellm")
    except Exception:  # litellm raises many kinds for shapes it cannot count
        return estimate(body)


def estimate(body: bytes) -> TokenCount:
    return TokenCount(max(1, len(body) // BYTES_PER_TOKEN), "bytes")


def _count(lib: Any, route: Route, payload: dict[str, Any]) -> int:
    chat, _names = adapter().translate_completion_input_params_with_tool_mapping(
        messages_request(payload, route), custom_llm_provider=route.key.provider
    )
    return int(
        lib.token_counter(
            model=litellm_model(route.key.provider, route.model),
            messages=chat["messages"],
            tools=chat.get("tools"),
            use_default_image_token_count=True,
        )
    )
