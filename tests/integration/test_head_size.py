"""A request head's size: bounded as a whole, not only line by line (the front door)."""

from __future__ import annotations

import asyncio
import json

import pytest
from structlog.testing import capture_logs

from router import client_connection
from tests.configs import preferring_a
from tests.conftest import HI, SIM_A, SIM_B
from tests.integration.test_front_door import (
    REQUEST,
    _answer,
    _closed_by_router,
    _dialect_error,
    _head,
    _socket,
)

BOTH_LOOPS = True  # reads come in other sizes on uvloop


def _padded_head(url: str, path: str, fields: int, body: bytes = REQUEST) -> bytes:
    """A request whose head carries `fields` extra fields of 1,000 bytes."""
    padding = "".join(f"X-Pad-{n}: {'p' * 990}\r\n" for n in range(fields))
    authority = url.removeprefix("http://")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n{padding}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


ANTHROPIC_REQUEST = json.dumps({"model": "gpt-4o", "max_tokens": 16, "messages": HI}).encode()


@pytest.mark.parametrize("pieces", [1, 40], ids=["in_one_write", "in_pieces"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_head_over_max_header_bytes_gets_a_431_in_the_endpoints_dialect(
    stack, path, pieces
):
    """aiohttp bounds each header line (8 KiB) and the field count (128), not their sum:
    a head could hold a megabyte, twice that once parsed, on each open connection. One
    over `max_header_bytes` is answered 431 (Envoy's answer) without reaching a
    provider, whether it came at once or a piece at a time; the connection closes."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_header_bytes": 8192}))
    body = ANTHROPIC_REQUEST if path == "/v1/messages" else REQUEST
    request = _padded_head(url, path, 12, body)
    with capture_logs() as logs:
        async with _socket(url) as (reader, writer):
            step = -(-len(request) // pieces)
            for at in range(0, len(request), step):
                writer.write(request[at : at + step])
                await writer.drain()
                await asyncio.sleep(0.01 if pieces > 1 else 0)
            answer = await _answer(reader)
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 431 "), head
    assert b"x-should-retry: false" in head.lower()
    message = _dialect_error(text, path == "/v1/messages", "request_header_too_large")
    assert "server.max_header_bytes" in message and "8192" in message
    assert not sim.requests
    refused = [entry for entry in logs if entry["event"] == "request_head_too_large"]
    assert len(refused) == 1 and refused[0]["bytes"] > 8192 == refused[0]["limit"]


async def test_heads_under_max_header_bytes_and_bodies_over_it_are_served(stack):
    """Only the head counts: a head just under the limit, sent in pieces, is served, and
    so are bodies many times the limit, sent at once or in pieces, on one connection."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_header_bytes": 8192}))
    large = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 100_000}]}
    ).encode()
    async with _socket(url) as (reader, writer):
        near = _padded_head(url, "/v1/chat/completions", 7)
        assert len(near) - len(REQUEST) < 8192
        for byte_at in range(0, len(near), 1000):
            writer.write(near[byte_at : byte_at + 1000])
            await writer.drain()
            await asyncio.sleep(0.005)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        whole = _padded_head(url, "/v1/chat/completions", 0, large)
        writer.write(whole)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        for at in range(0, len(whole), 20_000):
            writer.write(whole[at : at + 20_000])
            await writer.drain()
            await asyncio.sleep(0.005)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
    assert len(sim.requests) == 3


async def test_pipelined_after_a_good_request_a_head_too_large_gets_its_431(stack, monkeypatch):
    """A good request and one with a head over the limit in one write: the first is
    served, then the 431 comes, and the connection closes once the client has sent
    nothing more for a while (nginx's lingering close)."""
    monkeypatch.setattr(client_connection, "_LINGER_QUIET", 0.3)
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url, server={"max_header_bytes": 8192}))
    async with _socket(url) as (reader, writer):
        writer.write(_head(url) + _padded_head(url, "/v1/chat/completions", 12))
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        assert (await _answer(reader)).startswith(b"HTTP/1.0 431 ")
        assert await _closed_by_router(reader) == b""
    assert len(sim.requests) == 1


# A head refused for its size, and one aiohttp's parser refuses (a line over 8 KiB),
# each followed by a megabyte more.
REFUSED = {
    "too_large": (b"", b"HTTP/1.0 431 ", b'"request_header_too_large"'),
    "line_too_long": (b"X-Long: " + b"l" * 9000 + b"\r\n", b"HTTP/1.0 400 ", b'"bad_http_request"'),
}


@pytest.mark.parametrize("refused", list(REFUSED))
async def test_a_client_still_sending_a_refused_head_reads_its_error(stack, refused):
    """The SDKs send a whole request before they read: the router drops what still
    comes after the refusal (a lingering close), so the client's megabyte all goes, a
    piece at a time, and it reads the error rather than a reset."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))  # the default limit, 64 KiB
    line, status, code = REFUSED[refused]
    padded = _padded_head(url, "/v1/chat/completions", 1000)
    at = padded.index(b"\r\n") + 2
    request = padded[:at] + line + padded[at:]
    async with _socket(url) as (reader, writer):
        # In pieces that pass 64 KiB before aiohttp's 128 fields would (its own 400).
        for at in range(0, len(request), 1 << 14):
            writer.write(request[at : at + (1 << 14)])
            await writer.drain()  # raises if the router reset the connection
            await asyncio.sleep(0.01)  # as a slow link: long after the refusal
        answer = await _answer(reader)
    assert answer.startswith(status), answer[:200]
    assert code in answer
    assert not sim.requests


async def test_a_bad_head_in_the_read_that_ends_a_body_is_lingered_over_too(stack):
    """The end of one request's body and a head the parser refuses in one read: the
    first is answered, then the 400, although the client goes on sending."""
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    request = _head(url)
    half = len(request) - len(REQUEST) // 2
    async with _socket(url) as (reader, writer):
        writer.write(request[:half])
        await writer.drain()
        await asyncio.sleep(0.05)  # the body's first half in a read of its own
        writer.write(request[half:] + b"GET / HTTP/1.1\r\nX-Bad: \x01\r\n\r\n")
        for _ in range(16):
            writer.write(b"x" * (1 << 14))
            await writer.drain()
            await asyncio.sleep(0.01)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")
        second = await _answer(reader)
    assert second.startswith(b"HTTP/1.0 400 ") and b'"bad_http_request"' in second
