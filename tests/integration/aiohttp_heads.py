"""For the tests of responses written past aiohttp's prepare(): serve one handler,
send a raw request, and note whose head aiohttp built; compare answers but for the
Date."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.integration.test_secrets import raw_request

POST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n%b\r\n{}"
CLOSE = b"Connection: close\r\n"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def without_date(raw: bytes) -> bytes:
    """`raw` less its Date lines (a clock's): one in each answer's head."""
    out, count = re.subn(rb"\r\nDate: [^\r\n]*", b"", raw)
    assert count == raw.count(b"\r\nServer: "), raw  # one per head, no more
    return out


async def served(
    handler: Handler,
    request: bytes,
    setup: Callable[[web.Application], None] | None = None,
    extra: dict[str, Handler] | None = None,
) -> tuple[bytes, list[type]]:
    """Everything a client gets for `request` from `handler` at `/` (any method, and
    `extra` at their GET paths), and the types of the responses whose head aiohttp's
    _prepare_headers() built."""
    built: list[type] = []
    original = web.StreamResponse._prepare_headers

    async def spy(self: web.StreamResponse) -> None:
        built.append(type(self))
        await original(self)

    app = web.Application()
    app.router.add_route("*", "/", handler)
    for path, other in (extra or {}).items():
        app.router.add_get(path, other)
    if setup is not None:
        setup(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    web.StreamResponse._prepare_headers = spy  # type: ignore[method-assign]
    try:
        raw = await raw_request(f"http://127.0.0.1:{runner.addresses[0][1]}", request)
    finally:
        web.StreamResponse._prepare_headers = original  # type: ignore[method-assign]
        await runner.cleanup()
    return raw, built
