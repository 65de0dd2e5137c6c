"""Anthropic beta features a translated route cannot honour: dropped, not failed on.

A Messages request served through litellm (an OpenAI model behind `/v1/messages`) keeps
what its target can do and loses the rest, as a client of a multi-provider model
expects (`drop_params` does the same for OpenAI's own parameters):

- The `anthropic-beta` header never reaches litellm: the translator passes body fields
  only. Betas that change only how Anthropic serves (`claude-code-*`,
  `interleaved-thinking-*`, `context-1m-*`, `fine-grained-tool-streaming-*`) go with it.
- Beta body fields outside the translated set (`context_management`, `mcp_servers`,
  `container`) are left out by `anthropic_litellm.MESSAGES_FIELDS`.
- Advanced tool use (`advanced-tool-use-*`) adds fields to tools and tools of its own;
  litellm's adapter would merge the fields into the function's JSON schema and send the
  tool-search tools as they are, which OpenAI-format providers refuse with a 400
  (`tools[0].type`). Here the fields are dropped, and so are the tool-search tools: they
  only find deferred tools, and with deferral gone every tool is sent up front, which
  is what the request means without the beta.

Anthropic's server tools (web search, code execution) are not betas to drop: a request
that needs them is refused by the target, and says so.
"""

from __future__ import annotations

from typing import Any

# Tool fields that exist only with a beta, and have no OpenAI-format counterpart.
_BETA_TOOL_FIELDS = frozenset({"defer_loading", "input_examples", "allowed_callers"})
_TOOL_SEARCH = "tool_search_tool"


def without_unsupported_betas(request: dict[str, Any]) -> dict[str, Any]:
    """`request` (the translated Messages fields) less the beta tool fields and tools."""
    tools = request.get("tools")
    if not isinstance(tools, list):
        return request
    kept = [_tool(tool) for tool in tools if not _is_tool_search(tool)]
    if len(kept) == len(tools) and all(a is b for a, b in zip(kept, tools, strict=True)):
        return request
    trimmed = {**request, "tools": kept}
    if not kept:  # OpenAI refuses an empty tools list; with no tools, no tool choice
        trimmed.pop("tools")
        trimmed.pop("tool_choice", None)
    return trimmed


def _is_tool_search(tool: Any) -> bool:
    kind = tool.get("type") if isinstance(tool, dict) else None
    return isinstance(kind, str) and kind.startswith(_TOOL_SEARCH)


def _tool(tool: Any) -> Any:
    if not isinstance(tool, dict) or _BETA_TOOL_FIELDS.isdisjoint(tool):
        return tool
    return {name: value for name, value in tool.items() if name not in _BETA_TOOL_FIELDS}
