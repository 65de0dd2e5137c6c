"""The bounded decoder on its own: a piece per call, the held input drained by calls with
no new data, and the ratio and end checks across pieces."""

from __future__ import annotations

import functools
import gzip
import random
import string
import zlib
from collections.abc import Callable

import pytest

from router.upstream.http_errors import BrokenBody, TooLarge
from router.upstream.inflate import PIECE, Decoder


@functools.cache
def _events(count: int) -> bytes:
    """SSE chunks that repeat all but a word each: they compress about 25 times."""
    rng = random.Random(1)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8))) for _ in range(999)]
    chunk = '{"object":"chat.completion.chunk","choices":[{"delta":{"content":" %s"}}]}'
    return "".join(f"data: {chunk % rng.choice(words)}\n\n" for _ in range(count)).encode()


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


PACKERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "zlib-deflate": ("deflate", zlib.compress),
    "raw-deflate": ("deflate", _raw_deflate),
}


def _drained(decoder: Decoder, data: bytes) -> list[bytes]:
    """What one read decodes to, a call at a time, until the decoder holds nothing."""
    pieces = [decoder.decompress(data)]
    while decoder.holding:
        pieces.append(decoder.decompress(b""))
    return pieces


@pytest.mark.parametrize("packing", PACKERS.values(), ids=PACKERS.keys())
def test_a_read_that_inflates_far_is_decoded_a_piece_a_call(packing) -> None:
    encoding, pack = packing
    text = _events(40_000)  # 3.2 MB, in one read of about 130 KB
    decoder = Decoder(encoding, 200)
    first = decoder.decompress(pack(text))
    assert len(first) <= PIECE  # of 3.2 MB fed
    pieces = [first, *_drained(decoder, b"")]
    assert max(map(len, pieces)) <= PIECE
    assert len(pieces) > len(text) // PIECE
    assert b"".join(pieces) + decoder.flush() == text
    assert decoder.ended()


def test_reads_fed_a_byte_at_a_time_and_a_piece_at_a_time_decode_the_same() -> None:
    """Small reads never stop at a piece: nothing is held between them."""
    text = _events(2_000)
    packed = gzip.compress(text)
    decoder = Decoder("gzip", 200)
    out = []
    for at in range(len(packed)):
        out.append(decoder.decompress(packed[at : at + 1]))
        assert not decoder.holding
    assert b"".join(out) + decoder.flush() == text and decoder.ended()


def test_a_bomb_fails_once_it_passes_its_room_a_piece_at_a_time() -> None:
    """A small bomb (64 MiB of zeros) has a MiB of room, and fails after it; each call
    decodes a piece, and no call the whole of what was fed."""
    bomb = gzip.compress(bytes(64 << 20), 9)
    decoder = Decoder("gzip", 100)
    decoded = 0
    with pytest.raises(TooLarge, match="inflates more than 100 times"):
        decoded += len(decoder.decompress(bomb))
        while decoder.holding:
            piece = decoder.decompress(b"")
            assert len(piece) <= PIECE
            decoded += len(piece)
    assert decoded <= max(1 << 20, len(bomb) * 100)


def test_the_ratio_counts_held_input_as_fed() -> None:
    """A body just within the ratio is not refused part way: what a read left held
    was fed with it, and counts, as it did when a read was decoded in one call."""
    text = bytes(8 << 20)
    packed = gzip.compress(text, 9)
    ratio = -(-len(text) // len(packed))  # the least that lets it through
    decoder = Decoder("gzip", ratio)
    assert b"".join(_drained(decoder, packed)) + decoder.flush() == text


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        pytest.param(lambda packed: packed + b"junk", "bytes after the end", id="bytes-after"),
        pytest.param(lambda packed: packed + gzip.compress(b"x"), "bytes after", id="2-members"),
    ],
)
def test_bytes_after_the_end_are_refused_when_the_held_input_reaches_them(spoil, message) -> None:
    decoder = Decoder("gzip", 200)
    with pytest.raises(BrokenBody, match=message):
        _drained(decoder, spoil(gzip.compress(_events(40_000))))


def test_a_body_cut_short_inside_held_input_has_not_ended() -> None:
    packed = gzip.compress(_events(40_000))
    decoder = Decoder("gzip", 200)
    _drained(decoder, packed[: len(packed) // 2])
    decoder.flush()
    assert not decoder.ended()
