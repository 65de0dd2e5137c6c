"""SSE relay: the first event under a deadline, then the commit, then a byte pipe.

A streaming attempt ends at the first SSE data event. Until it is in hand nothing has
gone to the client, so an error (or a silent upstream) fails over. Once it is in hand
`prepare()` sends status and headers: the commit point. After that an upstream failure
ends the stream with an error event the client can see, never a fake `[DONE]`
(provider-signals.md §9.3). Bytes are forwarded as they arrive, untouched.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from router.classify import OK, classify_exception, classify_stream_error
from router.errors import UpstreamError, UpstreamProtocolError
from router.types import FailureClass, Verdict
from router.upstream import UpstreamResponse
from router.usage import Usage, usage_from_sse

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_DONE = b"data: [DONE]"


@dataclass(frozen=True, slots=True)
class StreamEnd:
    verdict: Verdict  # how the upstream stream ended
    client_gone: bool = False
    usage: Usage | None = None  # from the usage chunk, when the stream carried one


def _data_events(buffer: bytes, start: int = 0) -> Iterator[tuple[bytes, int]]:
    """(data payload, end offset) of each complete event; comments and pings skipped."""
    while (match := _EVENT_END.search(buffer, start)) is not None:
        data = [
            line[5:].lstrip(b" ")
            for line in buffer[start : match.start()].splitlines()
            if line.startswith(b"data:")
        ]
        start = match.end()
        if data:
            yield b"\n".join(data), start


def is_preamble(data: bytes) -> bool:
    """An event that carries nothing yet: OpenAI's first chunk (role, empty content).

    Failover stays possible until the first event with content (§9.3 item 1), so a
    provider that sends the preamble and then fails is still invisible to the client.
    """
    try:
        payload = json.loads(data)
    except ValueError:
        return False
    if not isinstance(payload, dict) or payload.get("error") or payload.get("usage"):
        return False
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason"):
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        if any(value for name, value in delta.items() if name != "role"):
            return False
    return True


async def read_first_event(response: UpstreamResponse, timeout: float) -> tuple[bytes, bytes]:
    """(buffered bytes, payload of the first event with content) within `timeout` seconds.

    Raises UpstreamProtocolError when the stream ends before such an event, and
    UpstreamTimeout (via `next_chunk`) when the deadline passes first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buffer = b""
    scanned = 0
    while True:
        chunk = await response.next_chunk(max(deadline - loop.time(), 0.0), phase="first_byte")
        if not chunk:
            raise UpstreamProtocolError(response.route_id, "stream ended before its first event")
        buffer += chunk
        for data, end in _data_events(buffer, scanned):
            scanned = end
            if not is_preamble(data):
                return buffer, data


def error_in_event(data: bytes) -> Verdict | None:
    """An OpenAI-style error event: any data object with a truthy `error` (§9.1)."""
    if b'"error"' not in data:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("error"):
        return classify_stream_error(data)
    return None


def _error_in_chunk(chunk: bytes) -> Verdict | None:
    for line in chunk.splitlines():
        if line.startswith(b"data:") and b'"error"' in line:
            verdict = error_in_event(line[5:].strip())
            if verdict is not None:
                return verdict
    return None


def error_event(message: str, code: str = "upstream_stream_error") -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class _Watch:
    """What the relay learns from the bytes it forwards, chunk by chunk: a provider error
    event, the usage chunk, and whether `[DONE]` came (it may straddle two chunks)."""

    __slots__ = ("done", "error", "tail", "usage")

    def __init__(self) -> None:
        self.done = False
        self.error: Verdict | None = None
        self.usage: Usage | None = None
        self.tail = b""

    def see(self, chunk: bytes) -> None:
        if b'"error"' in chunk and self.error is None:
            self.error = _error_in_chunk(chunk)
        if b"_tokens" in chunk:
            self.usage = usage_from_sse(chunk) or self.usage
        window = self.tail + chunk
        self.done = self.done or _DONE in window
        self.tail = window[-16:]

    def end(self, verdict: Verdict = OK, *, client_gone: bool = False) -> StreamEnd:
        return StreamEnd(verdict, client_gone=client_gone, usage=self.usage)


async def relay(
    response: UpstreamResponse, client: web.StreamResponse, first: bytes, idle: float
) -> StreamEnd:
    """Pipe an upstream stream, from its buffered start, to a prepared client response."""
    watch = _Watch()
    chunk = first
    try:
        while chunk:
            await client.write(chunk)
            watch.see(chunk)
            try:
                chunk = await response.next_chunk(idle)
            except UpstreamError as exc:
                await client.write(error_event(f"upstream stream failed: {exc.message}"))
                return watch.end(classify_exception(exc))
        if watch.error is not None:
            return watch.end(watch.error)  # the client has already seen the provider's event
        if not watch.done:
            # §9.3.4: a stream with no terminator was truncated; say so, do not end quietly.
            await client.write(error_event("upstream ended the stream without [DONE]"))
            return watch.end(
                Verdict(failure=FailureClass.SERVER_ERROR, message="stream ended without [DONE]")
            )
    except ConnectionResetError:
        return watch.end(client_gone=True)
    return watch.end()
