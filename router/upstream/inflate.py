"""A compressed response body, inflated within a bound (`limits.max_inflate_ratio`)."""

from __future__ import annotations

import zlib

from router.upstream.http_errors import BrokenBody, TooLarge

# Decoded bytes allowed before the inflate ratio applies: a small compressed answer
# may inflate far more than a long one without being a bomb.
_INFLATE_ALLOWANCE = 1 << 20


class Decoder:
    """gzip, zlib-wrapped deflate, or raw deflate (some servers send that as `deflate`),
    told apart by the first two bytes, as browsers and aiohttp do.

    Bounded: past the first MiB, the decoded size may be at most `ratio` times the
    compressed size, and a call never decodes more than that allows (zlib's
    `max_length`), so a bomb fails after a MiB or so instead of inflating into memory.
    Nothing may follow the compressed stream's end: zlib keeps such bytes (`unused_data`,
    copied whole on each call) and decodes none of them, so no limit on decoded bytes
    would ever see them; a second gzip member is refused the same way.
    """

    __slots__ = ("_fed", "_held", "_in", "_inflate", "_out", "_ratio")

    def __init__(self, encoding: str, ratio: int) -> None:
        self._inflate = zlib.decompressobj(31) if encoding == "gzip" else None
        self._held = b""  # deflate's first byte, until the second says which framing
        self._fed = False
        self._ratio = ratio
        self._in = 0
        self._out = 0

    def decompress(self, data: bytes) -> bytes:
        self._fed = True
        if self._inflate is None:
            data = self._held + data
            if len(data) < 2:
                self._held = data
                return b""
            zlib_header = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            self._inflate = zlib.decompressobj(15 if zlib_header else -15)
        if self._inflate.eof:
            if data:
                raise BrokenBody("bytes after the end of the compressed body")
            return b""
        self._in += len(data)
        room = max(_INFLATE_ALLOWANCE, self._in * self._ratio) - self._out
        out = self._inflate.decompress(data, room + 1)
        self._out += len(out)
        if len(out) > room:
            del out  # the traceback keeps this frame, and the frame its locals
            raise TooLarge(f"the compressed body inflates more than {self._ratio} times its size")
        if self._inflate.unused_data:
            raise BrokenBody("bytes after the end of the compressed body")
        return out

    def flush(self) -> bytes:
        return self._inflate.flush() if self._inflate is not None else b""

    def ended(self) -> bool:
        """Whether the compressed stream reached its own end (an empty body counts)."""
        if not self._fed:
            return True
        return self._inflate is not None and self._inflate.eof
