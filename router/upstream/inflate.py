"""A compressed response body, inflated within a bound (`limits.max_inflate_ratio`)."""

from __future__ import annotations

import zlib

from router.upstream.http_errors import BrokenBody, TooLarge

# Decoded bytes allowed before the inflate ratio applies: a small compressed answer
# may inflate far more than a long one without being a bomb.
_INFLATE_ALLOWANCE = 1 << 20
# Decoded bytes one call returns at most. The ratio alone lets one socket read of 64 KiB
# inflate to tens of MB (its room grows with all the input before it) before the
# stream's back-pressure (128 KiB) could act; a piece of twice that mark keeps a
# response's decoded bytes in hand near the mark, and is large enough that the call
# and the copy of the input left (zlib's `unconsumed_tail`) stay a few percent of the
# inflating itself.
PIECE = 1 << 18


class Decoder:
    """gzip, zlib-wrapped deflate, or raw deflate (some servers send that as `deflate`),
    told apart by the first two bytes, as browsers and aiohttp do.

    Bounded: past the first MiB, the decoded size may be at most `ratio` times the
    compressed size, and a call never decodes more than that allows (zlib's
    `max_length`), so a bomb fails after a MiB or so instead of inflating into memory.
    Nor does a call decode more than a piece (`PIECE`): the input it leaves is held
    (`holding`), and `decompress(b"")` goes on with it; the caller asks for the rest,
    a piece at a time, before it reads more.
    Nothing may follow the compressed stream's end: zlib keeps such bytes (`unused_data`,
    copied whole on each call) and decodes none of them, so no limit on decoded bytes
    would ever see them; a second gzip member is refused the same way.
    """

    __slots__ = ("_fed", "_first", "_in", "_inflate", "_out", "_ratio", "holding")

    def __init__(self, encoding: str, ratio: int) -> None:
        self._inflate = zlib.decompressobj(31) if encoding == "gzip" else None
        self._first = b""  # deflate's first byte, until the second says which framing
        self._fed = False
        self._ratio = ratio
        self._in = 0  # compressed bytes fed, held ones too: the ratio counts what came in
        self._out = 0
        # Input given and not decoded yet (or decoded, and in zlib's window still): the
        # last call stopped at its piece.
        self.holding = False

    def decompress(self, data: bytes) -> bytes:
        """What `data` decodes to, after what the decoder holds: a piece at most."""
        self._fed = True
        inflate = self._inflate
        if inflate is None:
            data = self._first + data
            if len(data) < 2:
                self._first = data
                return b""
            zlib_header = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            inflate = self._inflate = zlib.decompressobj(15 if zlib_header else -15)
        if inflate.eof:
            if data:
                raise BrokenBody("bytes after the end of the compressed body")
            return b""
        self._in += len(data)
        if self.holding:
            # zlib keeps what a call left (`unconsumed_tail`) but decodes only what it is
            # given: the tail goes first. It may be empty, with output still in zlib.
            data = inflate.unconsumed_tail + data if data else inflate.unconsumed_tail
        room = max(_INFLATE_ALLOWANCE, self._in * self._ratio) - self._out
        most = room + 1 if room < PIECE else PIECE
        out = inflate.decompress(data, most)
        self._out += len(out)
        if len(out) > room:
            del out  # the traceback keeps this frame, and the frame its locals
            raise TooLarge(f"the compressed body inflates more than {self._ratio} times its size")
        if inflate.unused_data:
            raise BrokenBody("bytes after the end of the compressed body")
        self.holding = len(out) == most and not inflate.eof
        return out

    def flush(self) -> bytes:
        """The last of the output, once the input is all given (not `holding`: zlib's
        flush would decode a held tail whole, past both bounds)."""
        assert not self.holding
        return self._inflate.flush() if self._inflate is not None else b""

    def ended(self) -> bool:
        """Whether the compressed stream reached its own end (an empty body counts)."""
        if not self._fed:
            return True
        return self._inflate is not None and self._inflate.eof
