"""One call to litellm under the response-head deadline, as failover expects of a send.

A non-streaming call is done when litellm returns. A streaming call is done when its
first chunk is in: litellm sends some providers' requests (Gemini's) only when the stream
is first read, and does not apply its own timeout there, so without the first chunk an
error or a silent provider would surface only after the attempt was already handed to
the relay. Until that chunk, any failure is the provider's answer (or a transport
error) and failover may still try the next route (provider-signals.md §9.3).

The use of a key's own client that `arguments` hold (`egress.client_arguments`) is
given back when the call returns, or, for a stream that opened, when it is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from router.errors import UpstreamProtocolError, UpstreamTimeout
from router.types import Route
from router.upstream.translate import egress
from router.upstream.translate.litellm_errors import error_answer
from router.upstream.translate.litellm_internals import stream_lines
from router.upstream.translate.translated import TranslatedAnswer


async def complete(
    lib: ModuleType, route: Route, arguments: Mapping[str, Any], head_timeout: float
) -> Any | TranslatedAnswer:
    """litellm's ModelResponse, or the provider's error answer."""
    try:
        async with asyncio.timeout(head_timeout):
            return await lib.acompletion(**arguments)
    except TimeoutError as exc:
        raise UpstreamTimeout(route.id, "first_byte") from exc
    except Exception as exc:  # litellm's errors; error_answer finds what the provider said
        return error_answer(exc, route.id, secret=route.key.api_key)
    finally:
        await egress.release(arguments.get("client"))


@dataclass(slots=True)
class OpenedStream:
    """A litellm stream whose first chunk has arrived."""

    route: Route
    stream: Any  # litellm's CustomStreamWrapper
    first: Any
    client: Any = None  # the key's own client, given back when the stream is closed

    async def chunks(self) -> AsyncIterator[Any]:
        """Every chunk, the first included. A stream that ends without a finish_reason
        was cut, and ending it quietly would pass a truncated answer as whole (§9.3.4)."""
        finished = _finishes(self.first)
        yield self.first
        async for chunk in self.stream:
            finished = finished or _finishes(chunk)
            yield chunk
        if not finished:
            raise UpstreamProtocolError(self.route.id, "stream ended without a finish_reason")

    async def aclose(self) -> None:
        client, self.client = self.client, None
        try:
            await close_stream(self.stream)
        finally:
            await egress.release(client)


async def open_stream(
    lib: ModuleType, route: Route, arguments: Mapping[str, Any], head_timeout: float
) -> OpenedStream | TranslatedAnswer:
    stream = None
    opened = False
    try:
        async with asyncio.timeout(head_timeout):
            stream = await lib.acompletion(**arguments)
            first = await anext(stream)
        opened = True
        return OpenedStream(route, stream, first, arguments.get("client"))
    except StopAsyncIteration as exc:
        raise UpstreamProtocolError(route.id, "stream ended before its first chunk") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(route.id, "first_byte") from exc
    except Exception as exc:
        return error_answer(exc, route.id, secret=route.key.api_key)
    finally:
        if not opened:
            try:
                if stream is not None:
                    await close_stream(stream)
            finally:
                await egress.release(arguments.get("client"))


async def close_stream(stream: Any) -> None:
    """Close a litellm stream and the provider connection under it.

    `CustomStreamWrapper.aclose()` closes the provider iterators that know how (Gemini's
    and OpenAI's close their HTTP response); Anthropic's is closed through its line
    generator (`litellm_internals.stream_lines`): the provider sees the client leave
    (style.md §3).
    """
    lines = stream_lines(stream)
    await stream.aclose()
    if lines is not None:
        await lines.aclose()


def _finishes(chunk: Any) -> bool:
    return any(getattr(choice, "finish_reason", None) for choice in chunk.choices or ())
