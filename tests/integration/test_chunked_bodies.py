"""A chunked request body: what its chunks may cost the router (the front door)."""

from __future__ import annotations

import asyncio
import json
import logging
import zlib

import pytest
from structlog.testing import capture_logs

from router import client_connection
from tests.configs import key, model, preferring_a, route, routes_yaml
from tests.conftest import SIM_A, SIM_B
from tests.integration.test_front_door import _answer, _closed_by_router, _dialect_error, _socket

BOTH_LOOPS = True  # reads come in other sizes on uvloop


def _chunked(url: str, path: str, body: bytes, size: int) -> bytes:
    """A request whose body is sent in chunks of `size` bytes."""
    authority = url.removeprefix("http://")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[at : at + size]), body[at : at + size])
        for at in range(0, len(body), size)
    )
    return head + chunks + b"0\r\n\r\n"


def _body(words: int, name: str = "gpt-4o") -> bytes:
    messages = [{"role": "user", "content": "x " * words}]
    return json.dumps({"model": name, "messages": messages}).encode()


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
async def test_a_body_in_chunks_of_a_byte_is_refused_in_the_endpoints_dialect(stack, path, shape):
    """aiohttp spends a few microseconds of the loop on each chunk, whatever its size: a
    megabyte in one-byte chunks was a second of CPU and stalls of 200 ms for every other
    request. Past 4,096 chunks a body must average 128 bytes a chunk: this one is a 400
    `invalid_body` in the endpoint's dialect, and reaches no provider."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    with capture_logs() as logs:
        async with _socket(url) as (reader, writer):
            writer.write(_chunked(url, path, _body(10_000), 1))
            answer = await _answer(reader)
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"connection: close" in head.lower()
    message = _dialect_error(text, shape == "anthropic", "invalid_body")
    assert "chunks are too small" in message
    assert not sim.requests
    refused = [entry for entry in logs if entry["event"] == "request_chunks_too_small"]
    assert len(refused) == 1 and refused[0]["chunks"] > 4096


@pytest.mark.parametrize(("words", "size"), [(1_000, 1), (400_000, 150), (400_000, 16_384)])
async def test_bodies_in_chunks_of_any_sensible_size_are_served(stack, words, size):
    """A small body in tiny chunks (under 4,096 of them), and a large one (5,300 chunks
    of 150 bytes, or 16 KiB ones), on one kept connection. (A model with no known context
    window, so that 800 KB of prompt is not counted against one.)"""
    sim, sim_url = await stack.sim(SIM_A)
    url = await stack.router(
        routes_yaml(
            keys=[key("a", sim_url, api_key=SIM_A.api_key)],
            models={"long": model(route("a", "sim-long-context"))},
        ),
    )
    async with _socket(url) as (reader, writer):
        for _ in range(2):
            writer.write(_chunked(url, "/v1/chat/completions", _body(words, "long"), size))
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")
    assert len(sim.requests) == 2


async def test_a_gzip_body_padded_with_empty_blocks_in_chunks_of_a_byte_is_refused(stack):
    """Chunks of gzip that inflate to nothing add nothing to the body, so aiohttp notes
    none of them: they are counted by their framing instead."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    deflate = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    padded = deflate.compress(_body(10)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    padded += b"\x00\x00\x00\xff\xff" * 5_000  # empty stored blocks: they inflate to nothing
    padded += deflate.flush()
    request = _chunked(url, "/v1/chat/completions", padded, 1)
    at = request.index(b"Transfer-Encoding")
    request = request[:at] + b"Content-Encoding: gzip\r\n" + request[at:]
    async with _socket(url) as (reader, writer):
        writer.write(request)
        answer = await _answer(reader)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"chunks are too small" in answer
    assert not sim.requests


def _broken_by(url: str, how: str) -> tuple[bytes, bytes]:
    """A chunked request whose body breaks, in two parts for two reads: the head (and
    the body's start), then what breaks it: its framing (a size that is not hex), its
    chunks (past 4,096 of a byte), or its content (gzip that is not)."""
    request = _chunked(url, "/v1/chat/completions", _body(10_000), 1 if how == "chunks" else 64)
    request = request.removesuffix(b"0\r\n\r\n")
    if how == "content":
        at = request.index(b"Transfer-Encoding")
        request = request[:at] + b"Content-Encoding: gzip\r\n" + request[at:]
    at = request.index(b"\r\n\r\n") + 4 + (0 if how == "content" else 200)
    return request[:at], request[at:] + (b"zz\r\n" if how == "framing" else b"")


@pytest.mark.parametrize("how", ["framing", "chunks", "content"])
async def test_a_client_still_sending_a_broken_body_reads_its_400(stack, how, monkeypatch):
    """A client sends its whole body before it reads: what still comes after the body
    broke is dropped (a lingering close, as after a refused head) until the client
    pauses, so it reads its 400 rather than a reset that loses it."""
    monkeypatch.setattr(client_connection, "_LINGER_QUIET", 0.3)
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(preferring_a(sim_url))
    start, breaking = _broken_by(url, how)
    async with _socket(url) as (reader, writer):
        writer.write(start)
        await writer.drain()
        await asyncio.sleep(0.05)  # the handler is reading the body when it breaks
        writer.write(breaking)
        for _ in range(64):  # a megabyte more, long after the break
            writer.write(b"%x\r\n%s\r\n" % (1 << 14, b"x" * (1 << 14)))
            await writer.drain()  # raises if the router reset the connection
            await asyncio.sleep(0.005)
        answer = await _answer(reader)
        assert await _closed_by_router(reader) == b""  # once the client paused
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"connection: close" in head.lower()
    _dialect_error(text, False, "invalid_body")
    assert not sim.requests


async def test_a_body_that_breaks_while_read_out_after_an_early_answer_is_no_error(stack, caplog):
    """A request refused before its body is read (a 401), whose chunked framing breaks
    while aiohttp reads out the rest: the client's fault, an info line at most, on
    either of aiohttp's parsers (the Python one raises its own error there), and the
    connection closes."""
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    keyed = {"client_keys": ["${ROUTER_KEY}"]}
    url = await stack.router(preferring_a(sim_url, server=keyed), environ={"ROUTER_KEY": "k-1"})
    start = _chunked(url, "/v1/chat/completions", _body(100), 64)
    start = start[: start.index(b"\r\n\r\n") + 4 + 2 * len(b"40\r\n" + b"x" * 64 + b"\r\n")]
    async with _socket(url) as (reader, writer):
        writer.write(start)  # the head and two whole chunks
        assert (await _answer(reader)).startswith(b"HTTP/1.1 401 ")
        writer.write(b"zz\r\n")
        assert await _closed_by_router(reader) == b""
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
    assert not sim.requests
