"""What goes upstream of the client's headers: each name once, whatever spelling the
client, the key's `headers:` and the router's own use, read off the wire by a bare
aiohttp upstream (its `raw_headers` keeps every field line as sent)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import anthropic
import pytest
from aiohttp import web

from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, SIM_A, client, raw_upstream

pytestmark = pytest.mark.timeout(30)

_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
}
_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


def _recording(answer: dict[str, Any], heads: list[list[tuple[str, str]]]) -> Any:
    async def upstream(request: web.Request) -> web.Response:
        await request.read()
        heads.append([(name.decode(), value.decode()) for name, value in request.raw_headers])
        return web.Response(text=json.dumps(answer), content_type="application/json")

    return upstream


def _once_each(head: list[tuple[str, str]]) -> dict[str, str]:
    """The head's fields by lowercase name, after checking that none came twice."""
    counted = Counter(name.lower() for name, _value in head)
    assert [name for name, times in counted.items() if times > 1] == []
    return {name.lower(): value for name, value in head}


async def _raw_post(url: str, path: str, fields: list[tuple[str, str]], body: bytes) -> bytes:
    """A request written by hand, so that its header spellings are exactly these."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{lines}"
    writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_chat_request_goes_upstream_with_each_header_once(stack) -> None:
    """fetch() (the Node SDKs) sends every name in lowercase. aiohttp's C parser hands
    the names it knows (Content-Type) to the router in their usual spelling, its Python
    parser (AIOHTTP_NO_EXTENSIONS=1, or a platform with no wheel) as sent: there the
    client's content-type went upstream next to the router's Content-Type, and a strict
    server (aiohttp's Python parser, for one) answered 400."""
    heads: list[list[tuple[str, str]]] = []
    async with raw_upstream("/v1/chat/completions", _recording(_CHAT, heads)) as upstream:
        config = routes_yaml(
            keys=[key("a", f"{upstream}/v1", api_key=SIM_A.api_key)],
            models={"gpt": model(route("a", "gpt-4o"))},
        )
        url = await stack.router(config)
        fields = [
            ("content-type", "application/json"),
            ("authorization", "Bearer client"),
            ("user-agent", "OpenAI/JS 4.0.0"),
            ("x-stainless-lang", "js"),
        ]
        body = json.dumps({"model": "gpt", "messages": HI}).encode()
        answer = await _raw_post(url, "/v1/chat/completions", fields, body)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        completion = await client(url).chat.completions.create(model="gpt", messages=HI)
        assert completion.choices[0].message.content == "hi"
    for head, lang in zip(heads, ("js", "python"), strict=True):
        sent = _once_each(head)
        assert sent["content-type"] == "application/json"
        assert sent["authorization"] == f"Bearer {SIM_A.api_key}"
        assert sent["x-stainless-lang"] == lang  # the SDKs' own hints still go


async def test_anthropic_headers_in_any_spelling_go_once_the_keys_first(stack) -> None:
    heads: list[list[tuple[str, str]]] = []
    async with raw_upstream("/v1/messages", _recording(_MESSAGE, heads)) as upstream:
        config = routes_yaml(
            keys=[
                key("plain", upstream, api_key="sk-ant-plain-0001", provider="anthropic"),
                key(
                    "pinned", upstream, api_key="sk-ant-pinned-0002", provider="anthropic",
                    headers={"Anthropic-Version": "2024-10-22", "X-Title": "the key's"},
                ),
            ],
            models={
                "claude": model(route("plain", "claude-haiku-4-5")),
                "pinned": model(route("pinned", "claude-haiku-4-5")),
            },
        )  # fmt: skip
        url = await stack.router(config)
        fields = [
            ("Anthropic-Version", "2022-01-01"),  # twice: the last one goes
            ("anthropic-version", "2023-01-01"),
            ("Anthropic-Beta", "tools-2024-04-04"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("x-title", "the client's"),
        ]
        for name in ("claude", "pinned"):
            body = json.dumps({"model": name, "max_tokens": 8, "messages": HI}).encode()
            answer = await _raw_post(url, "/v1/messages", fields, body)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]

        # And the SDK, which spells it `anthropic-version`, on the pinned key.
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0)
        message = await sdk.messages.create(model="pinned", max_tokens=8, messages=HI)  # type: ignore[arg-type]
        assert message.content[0].text == "hi"  # type: ignore[union-attr]

    plain, pinned, pinned_sdk = (_once_each(head) for head in heads)
    assert plain["anthropic-version"] == "2023-01-01"  # the client's (its last), as sent
    assert plain["anthropic-beta"] == "tools-2024-04-04, prompt-caching-2024-07-31"
    assert plain["content-type"] == "application/json"
    assert plain["x-title"] == "the client's"
    assert plain["x-api-key"] == "sk-ant-plain-0001"
    for sent in (pinned, pinned_sdk):
        assert sent["anthropic-version"] == "2024-10-22"  # the key's, over the client's
        assert sent["x-title"] == "the key's"
        assert sent["x-api-key"] == "sk-ant-pinned-0002"
