"""Which beta features a translated Messages request keeps (upstream/translate/betas.py)."""

from __future__ import annotations

from typing import Any

import pytest

from router.upstream.translate.betas import without_unsupported_betas

SCHEMA = {"type": "object", "properties": {}}
PLAIN = {"name": "f", "input_schema": SCHEMA}
DEFERRED = {**PLAIN, "defer_loading": True, "input_examples": [{}], "allowed_callers": ["x"]}
SEARCH = {"type": "tool_search_tool_bm25_20251119", "name": "tool_search_tool_bm25"}
WEB = {"type": "web_search_20250305", "name": "web_search"}


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        pytest.param({"messages": []}, {"messages": []}, id="no-tools"),
        pytest.param({"tools": [PLAIN]}, {"tools": [PLAIN]}, id="plain-tool-kept"),
        pytest.param({"tools": [DEFERRED]}, {"tools": [PLAIN]}, id="beta-fields-dropped"),
        pytest.param({"tools": [SEARCH, DEFERRED]}, {"tools": [PLAIN]}, id="tool-search-dropped"),
        pytest.param({"tools": [SEARCH], "tool_choice": {"type": "auto"}}, {}, id="no-tools-left"),
        pytest.param({"tools": [WEB]}, {"tools": [WEB]}, id="server-tools-not-a-beta"),
    ],
)
def test_translated_requests_lose_the_betas_their_target_cannot_honour(
    request_fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert without_unsupported_betas(request_fields) == expected


def test_a_request_without_betas_is_returned_as_it_is() -> None:
    request = {"tools": [PLAIN], "messages": []}
    assert without_unsupported_betas(request) is request
