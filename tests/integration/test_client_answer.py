"""A whole answer: head and body in one write, the bytes aiohttp's Response writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web

from router.handlers.client_answer import ClientAnswer
from tests.integration.aiohttp_heads import CLOSE, POST, served, without_date

BODY = b'{"id":"chatcmpl-1","choices":[{"index":0,"message":{"content":"hi"}}]}'
HEADERS = {"Content-Type": "application/json", "x-router-attempts": "1", "x-router-route": "k/m"}


async def _both_ways(
    request: bytes,
    status: int = 200,
    body: bytes = BODY,
    setup: Callable[[web.Application], None] | None = None,
) -> tuple[bytes, bytes, bool]:
    """What a client gets for `request` from a ClientAnswer and from aiohttp's Response
    with the same status, body and headers (and an x-request-id set after the handler,
    as the endpoint sets it); and whether aiohttp's _prepare_headers() built the
    ClientAnswer's head."""

    def handler(kind: type[web.Response]):
        async def handle(request: web.Request) -> web.StreamResponse:
            response = kind(status=status, body=body, headers=HEADERS)
            response.headers["x-request-id"] = "req-1"  # after the handler: still sent
            return response

        return handle

    extra = {"/next": handler(web.Response)}
    ours, built = await served(handler(ClientAnswer), request, setup, extra)
    theirs, built_theirs = await served(handler(web.Response), request, setup, extra)
    assert web.Response in built_theirs  # the spy sees aiohttp's own prepare
    return ours, theirs, ClientAnswer in built


@pytest.mark.parametrize("connection", [CLOSE, b""], ids=["close", "keep"])
@pytest.mark.parametrize(
    ("status", "body"),
    [(200, BODY), (200, b""), (400, b'{"error":{}}'), (200, b'{"a":"' + b"x" * 300_000 + b'"}')],
    ids=["200", "empty", "400", "large"],  # large: its head written beside it, not joined
)
async def test_an_answer_sends_the_bytes_aiohttp_would_send(connection, status, body):
    """Head and body in one write, not built by aiohttp, and the same as its Response's
    (but for the Date, a clock's): the status line, the headers in their order (one set
    after the handler included), Content-Length, Date, Server, Connection: close when
    the client asked for it; kept alive otherwise."""
    request = POST % connection
    if not connection:
        request += b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ours, theirs, built = await _both_ways(request, status, body)
    assert not built
    assert without_date(ours) == without_date(theirs)
    head, _, rest = ours.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nx-request-id: req-1\r\n" in head
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head
    if connection:
        assert rest == body
    else:  # the next request on the same connection is answered after it
        assert rest.startswith(body + b"HTTP/1.1 %d " % status) and rest.endswith(body)


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-stamped"] = "yes"


@pytest.mark.parametrize(
    ("request_bytes", "status", "setup", "check"),
    [
        (
            b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            200,
            None,
            lambda raw: raw.startswith(b"HTTP/1.0 200 OK") and raw.endswith(BODY),
        ),
        (
            b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            200,
            None,
            lambda raw: raw.endswith(b"\r\n\r\n") and BODY not in raw,
        ),
        (
            POST % CLOSE,
            200,
            lambda app: app.on_response_prepare.append(_stamp),
            lambda raw: b"\r\nx-stamped: yes\r\n" in raw,
        ),
        (POST % CLOSE, 204, None, lambda raw: b"Content-Length" not in raw and BODY not in raw),
    ],
    ids=["http-1.0", "head", "prepare-hook", "204"],
)
async def test_any_other_case_is_aiohttp_s_response(request_bytes, status, setup, check):
    ours, theirs, built = await _both_ways(request_bytes, status, setup=setup)
    assert built
    assert without_date(ours) == without_date(theirs)
    assert check(ours), ours


async def test_after_its_end_an_answer_is_in_the_state_aiohttp_leaves():
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        response = ClientAnswer(status=200, body=BODY, headers=HEADERS)
        await response.prepare(request)
        await response.write_eof()
        await response.write_eof()  # a second end is nothing, as in aiohttp
        seen.update(
            length=response.body_length,
            keep_alive=response.keep_alive,
            prepared=response.prepared,
            headers=dict(response.headers),
        )
        return response

    raw, _ = await served(handler, POST % CLOSE)
    assert raw.endswith(b"\r\n\r\n" + BODY)
    assert seen["prepared"] is True
    assert seen["length"] == len(raw)  # as aiohttp counts it: the head too
    assert seen["keep_alive"] is False  # the client said close
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Length"] == str(len(BODY)) and headers["Connection"] == "close"
    assert {"Date", "Server"} <= set(headers)
