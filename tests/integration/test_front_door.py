"""What a client's connection can and cannot make the router do (issue 17's front door)."""

from __future__ import annotations

import asyncio
import json

from tests.configs import preferring_a
from tests.conftest import HI, SIM_A, SIM_B


async def _raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One request written byte for byte, so that no client library adds or drops a
    header; the connection is closed after the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read(1 << 16)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_headers_the_clients_connection_header_nominates_stay_on_that_connection(stack):
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    body = json.dumps({"model": "gpt-4o", "messages": HI}).encode()
    answer = await _raw_post(
        url,
        "/v1/chat/completions",
        body,
        {
            "Connection": "close, X-Hop-Secret ,x-other-hop",
            "X-Hop-Secret": "for-the-next-hop-only",
            "X-Other-Hop": "1",
            "OpenAI-Beta": "assistants=v2",
        },
    )
    assert answer.startswith(b"HTTP/1.1 200")
    sent = {name.lower() for name in sim.requests[-1].headers}
    assert "openai-beta" in sent  # an end-to-end header still goes
    assert not {"x-hop-secret", "x-other-hop", "connection"} & sent
