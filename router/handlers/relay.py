"""SSE relay: the bytes of an open stream, piped to the client's committed response.

The handler commits (`prepare()`) once the first content event is in hand; from then
on nothing fails over. An upstream failure ends the stream with an error event in the
client's dialect, never a fake terminator (provider-signals.md §9.3). Bytes are
forwarded as they arrive, event by event (an unfinished event waits for its end), and
otherwise untouched but for redaction; the stream's watch reads them.
"""

from __future__ import annotations

from time import monotonic

from router.errors import UpstreamError, UpstreamTimeout
from router.failover.open_stream import OpenStream
from router.handlers.client_stream import ClientStream
from router.outcomes import FailureClass, Verdict
from router.rules.failures import classify_exception
from router.types import Timeouts
from router.wire.dialects import Dialect
from router.wire.stream_watch import EventTooLarge, StreamEnd

# Seconds the body's end may take once the stream's terminator is in. An SDK reads on
# to the end of the response after `[DONE]` (openai's drains it): an upstream holding
# the connection open must not keep its client waiting for the idle timeout.
_AFTER_END = 2.0


async def relay(
    stream: OpenStream,
    client: ClientStream,
    dialect: Dialect,
    timeouts: Timeouts,
    *,
    strip_usage: bool = False,
) -> StreamEnd:
    """Pipe `stream`, from its buffered start, to the prepared `client` response; how
    it ended. A client that leaves cancels this; the stream's exit then reads how far
    it got from its watch.

    `timeouts`: the route's. No more than `idle` seconds may pass without a whole event
    (counted from the first read that brings none, since a whole one came), so an
    upstream that trickles a byte at a time does not keep the stream open; `stream`
    bounds the whole of it.
    `strip_usage`: the router asked for a usage chunk the client did not; drop it.

    One coroutine for the whole loop: every event wakes each frame between the task and
    the read, so a helper coroutine around the loop would cost a resumption an event.
    """
    upstream, watch = stream.upstream, stream.watch
    # Whole events only (the watch holds an unfinished one), so a key the redaction
    # must catch never spans two writes.
    redaction = stream.redaction
    # Bound once: the loop runs for every piece of the stream.
    read, clean, next_chunk = (
        watch.without_usage if strip_usage else watch.see,
        redaction.clean,
        upstream.next_chunk,
    )
    idle = timeouts.idle
    after_end = _AFTER_END if idle > _AFTER_END else idle
    upstream.limit_stream(timeouts.stream)
    since = 0.0  # when a read first brought no whole event, since one did; 0: none
    chunk = stream.first
    try:
        while chunk:
            try:
                out = read(chunk)
            except EventTooLarge as exc:
                end = await _too_large(stream, client, dialect, exc)
                break
            out = clean(out, watch.hinted)
            if watch.done and upstream.ended():
                # The terminator came with the end of the body: send the last events and
                # the end of the response in one write, not two.
                await client.write_eof(out + clean(watch.rest()))
                watch.delivered = True
                return watch.end(watch.error) if watch.error is not None else watch.end()
            if out:
                await client.write(out)
                since = 0.0
            elif not since:
                since = monotonic()
            if watch.done:
                watch.delivered = True  # written: a client leaving now was served in full
            try:
                # After the terminator only the body's end is due, at once nearly always.
                chunk = await next_chunk(
                    after_end if watch.done else idle if not since else since + idle - monotonic()
                )
            except UpstreamError as exc:
                end = await _read_failed(stream, client, dialect, exc)
                break
        else:
            end = await _body_ended(stream, client, dialect)
    except ConnectionResetError:
        return watch.end(client_gone=True)
    if not client.ended:  # the last events took it with them, mostly
        await client.write_eof()
    return end


async def _too_large(
    stream: OpenStream, client: ClientStream, dialect: Dialect, exc: EventTooLarge
) -> StreamEnd:
    """An event past the limit: the whole events before it, then an error event."""
    watch = stream.watch
    message = f"upstream stream failed: {exc}"
    clean = stream.redaction.clean(exc.complete)
    await client.write(clean + dialect.error_event(message, watch.last))
    return watch.end(Verdict(failure=FailureClass.SERVER_ERROR, message=str(exc)))


async def _read_failed(
    stream: OpenStream, client: ClientStream, dialect: Dialect, exc: UpstreamError
) -> StreamEnd:
    """How a stream whose next read failed (a timeout, a reset) ended."""
    watch = stream.watch
    if watch.done:
        # The whole answer is written: an upstream that then holds the connection open
        # (or breaks it) does not undo it. The response ends now, and the connection,
        # not at its end, is not used again.
        return watch.end(watch.error) if watch.error is not None else watch.end()
    # What is held of an unfinished event is dropped: the error event follows whole
    # events only.
    message = stream.redaction.text(f"upstream stream failed: {exc.message}")
    await client.write(dialect.error_event(message, watch.last))
    end = watch.end(classify_exception(exc))
    if isinstance(exc, UpstreamTimeout) and exc.phase == "stream":
        # The router's bound (timeouts.stream), not the route's failure: a generation
        # longer than it says nothing of the route's health.
        end.judged = False
    return end


async def _body_ended(stream: OpenStream, client: ClientStream, dialect: Dialect) -> StreamEnd:
    """How a stream whose body ended (without the terminator in its last read) ended."""
    watch = stream.watch
    if watch.error is not None or watch.done:
        held = stream.redaction.clean(watch.rest())  # a last event with no blank line after it
        if held:
            await client.write(held)
    if watch.error is not None:
        return watch.end(watch.error)  # the client has already seen the provider's event
    if not watch.done:
        # §9.3.4: a stream with no terminator was truncated; say so, do not end quietly.
        await client.write(dialect.error_event("upstream ended the stream unfinished", watch.last))
        return watch.end(
            Verdict(failure=FailureClass.SERVER_ERROR, message="stream ended unfinished")
        )
    return watch.end()
