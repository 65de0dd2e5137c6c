"""What a request needs of a route beyond its API: tools, images, a JSON output format.

Read once per request from the parsed body (README "Capabilities"), as a Capability
mask the walk compares with each route's. Only what some route the request may reach
lacks is looked for (`ModelSpec.checked_needs`, fixed at load): with routes that can all
do everything, as with models litellm's data does not describe, nothing is. Otherwise
only top-level keys are looked at, except for images, whose parts sit inside message
contents: only contents that are lists, at most `MAX_PARTS` parts in all, so the cost
follows the number of parts, never the length of the text.
"""

from __future__ import annotations

from typing import Any

from router.types import Capability, Operation

TOOLS = int(Capability.TOOLS)
IMAGES = int(Capability.IMAGES)
JSON_OBJECT = int(Capability.JSON_OBJECT)
JSON_SCHEMA = int(Capability.JSON_SCHEMA)
_FORMATS = {"json_object": JSON_OBJECT, "json_schema": JSON_SCHEMA}
# Content part types that carry an image: chat completions, Responses, Anthropic.
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
MAX_PARTS = 10_000  # content parts looked at for images, per request


def request_needs(operation: Operation, payload: dict[str, Any], checked: int) -> int:
    """The Capability mask `payload` needs, of the bits in `checked`; 0 for none (and
    for embeddings and counts)."""
    if not checked:
        return 0
    if operation is Operation.CHAT:
        needs = _format(payload.get("response_format"))
        items = payload.get("messages")
    elif operation is Operation.RESPONSES:
        text = payload.get("text")
        needs = _format(text.get("format")) if isinstance(text, dict) else 0
        items = payload.get("input")
    elif operation is Operation.MESSAGES:
        needs = _anthropic_format(payload)
        items = payload.get("messages")
    else:
        return 0
    if checked & TOOLS and (payload.get("tools") or payload.get("functions")):
        needs |= TOOLS
    if checked & IMAGES and isinstance(items, list) and _has_image(items):
        needs |= IMAGES
    return needs & checked


def _format(value: Any) -> int:
    """`response_format` (chat) or `text.format` (Responses): {"type": ...}."""
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            return _FORMATS.get(kind, 0)
    return 0


def _anthropic_format(payload: dict[str, Any]) -> int:
    """Anthropic's structured outputs: `output_format`, or `output_config.format`."""
    needs = _format(payload.get("output_format"))
    config = payload.get("output_config")
    if isinstance(config, dict):
        needs |= _format(config.get("format"))
    return needs


def _has_image(items: list[Any]) -> bool:
    """Whether a message (or Responses input item) holds an image part, directly or in
    a tool result's content; at most MAX_PARTS parts are looked at."""
    budget = MAX_PARTS
    for item in items:
        budget -= 1
        if budget < 0:
            return False
        if not isinstance(item, dict):
            continue
        if _is_image(item):  # a Responses input item may be the image itself
            return True
        content = item.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            budget -= 1
            if budget < 0:
                return False
            if not isinstance(part, dict):
                continue
            if _is_image(part):
                return True
            inner = part.get("content")  # Anthropic's tool_result: a list of blocks
            if part.get("type") == "tool_result" and isinstance(inner, list):
                for block in inner:
                    budget -= 1
                    if budget < 0:
                        return False
                    if isinstance(block, dict) and _is_image(block):
                        return True
    return False


def _is_image(part: dict[str, Any]) -> bool:
    kind = part.get("type")
    return type(kind) is str and kind in _IMAGE_PARTS
