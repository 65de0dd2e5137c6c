"""The upstream client reads a response's fields off the head's bytes once the parser
(llhttp) has accepted them: those fields must be the ones the parser reports, field by
field, whatever the reads' boundaries and however many interim heads come first."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httptools
import pytest

from router.types import Limits
from router.upstream.connection import Connection
from router.upstream.http_errors import TooLarge

_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Pieces of a value: any byte the parser takes in one, and whole, cut and bad UTF-8.
_VALUE = [bytes([byte]) for byte in b"  \t:" + bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))]
_VALUE += ["é".encode(), "€".encode(), "😀".encode(), "😀".encode()[:2], b"\xe2\x82"] * 20


class _Transport:
    """What Connection calls on an asyncio transport; nothing is sent anywhere."""

    def __init__(self) -> None:
        self.closed = False

    def writelines(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Fields:
    """The parser's own report of each head's fields (one on_header call per field)."""

    def __init__(self) -> None:
        self.heads: list[list[tuple[bytes, bytes]]] = [[]]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.heads[-1].append((name, value))

    def on_headers_complete(self) -> None:
        self.heads.append([])


def _field(rng: random.Random) -> bytes:
    name = bytes(rng.choices(_TOKEN, k=rng.randint(1, 12)))
    value = b"".join(rng.choices(_VALUE, k=rng.randint(0, 30)))
    before = bytes(rng.choices(b" \t", k=rng.choice((0, 0, 1, 3))))
    return b"X-" + name + b":" + before + value.lstrip(b" \t") + b"\r\n"


def _head(rng: random.Random, status: bytes, fields: int) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(_field(rng) for _ in range(fields)) + b"\r\n"


def _answer(rng: random.Random) -> bytes:
    interim = [_head(rng, rng.choice((b"100 Continue", b"103 Early Hints")), rng.randint(0, 3))]
    head = _head(rng, rng.choice((b"200 OK", b"429 Too Many Requests")), rng.randint(0, 25))
    head = head[:-2] + b"Content-Length: 2\r\n\r\n"
    return b"".join(interim[: rng.randint(0, 1)]) + head + b"{}"


def _reads(rng: random.Random, answer: bytes) -> list[bytes]:
    """The answer cut at random places, single bytes included."""
    cuts = sorted(rng.sample(range(1, len(answer)), k=min(len(answer) - 1, rng.randint(0, 6))))
    if rng.random() < 0.1:
        cuts = list(range(1, len(answer)))
    return [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]


_LIMITS = Limits()


async def _read(reads: list[bytes], limits: Limits = _LIMITS) -> Any:
    loop = asyncio.get_running_loop()
    connection = Connection(loop, limits, lambda c: None, lambda c: None)
    connection.connection_made(_Transport())  # type: ignore[arg-type]
    response = connection.send([b"POST / HTTP/1.1\r\n\r\n"])
    for data in reads:
        if connection.closed:
            break  # as a transport does: no read after close()
        connection.data_received(data)
    await response.head()
    return response


async def test_the_fields_are_the_parsers_field_for_field_whatever_the_reads() -> None:
    rng = random.Random(1515)
    accepted = 0
    for _ in range(600):
        answer = _answer(rng)
        parsed = _Fields()
        try:
            httptools.HttpResponseParser(parsed).feed_data(answer)
        except httptools.HttpParserError:
            continue  # not HTTP the parser takes: a BadResponse either way
        accepted += 1
        response = await _read(_reads(rng, answer))
        expected = [
            (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
            for name, value in parsed.heads[-2]  # the last head's
        ]
        assert list(response.headers.items()) == expected, answer
        assert response.status == int(answer.rsplit(b"HTTP/1.1 ", 1)[1][:3])
        assert await response.read() == b"{}"
    assert accepted > 500  # the generator writes what the parser accepts


@pytest.mark.parametrize("pieces", [1, 7, 0], ids=["one-read", "seven-reads", "byte-by-byte"])
async def test_a_head_over_the_byte_limit_is_refused_however_it_arrives(pieces: int) -> None:
    """Before, only a head still incomplete after a read was measured: one that came
    whole in a single read passed whatever its size."""
    answer = (
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"v" * 20_000 + b"\r\nContent-Length: 2\r\n\r\n{}"
    )
    size = len(answer) // pieces + 1 if pieces else 1
    reads = [answer[i : i + size] for i in range(0, len(answer), size)]
    with pytest.raises(TooLarge, match="head larger than 16384 bytes"):
        await _read(reads, Limits(max_head_bytes=16384))


def _fields(n: int) -> bytes:
    return b"".join(b"X-F%d: v\r\n" % i for i in range(n))


@pytest.mark.parametrize(
    ("interim", "final", "refused"), [(0, 4, False), (0, 5, True), (2, 2, False), (2, 3, True)]
)
async def test_the_field_limit_counts_every_field_of_every_head(
    interim: int, final: int, refused: bool
) -> None:
    """`max_headers` 5: Content-Length and `final` more in the head, after an interim
    head of `interim` fields when there are some."""
    first = b"HTTP/1.1 100 Continue\r\n" + _fields(interim) + b"\r\n" if interim else b""
    head = b"HTTP/1.1 200 OK\r\n" + _fields(final) + b"Content-Length: 2\r\n\r\n{}"
    limits = Limits(max_headers=5)
    if refused:
        with pytest.raises(TooLarge, match="more than 5 header fields"):
            await _read([first + head], limits)
    else:
        assert len((await _read([first, head] if first else [head], limits)).headers) == final + 1
