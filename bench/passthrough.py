"""A bare aiohttp pass-through: the baseline that shows what routing itself costs.

    python bench/passthrough.py --upstream http://127.0.0.1:PORT/v1 --key sk-... --port 0

No parsing, no routing, no retries: body bytes out, response chunks back as they arrive.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(upstream: str, key: str, port: int) -> None:
    # limit=0 and one shared session, as the router does, so the pools compare alike.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(upstream + "/chat/completions", data=body, headers=headers) as up:
            content_type = up.headers.get("Content-Type", "application/json")
            response = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    try:
        await listen(forward, port)
    finally:
        await session.close()


async def listen(forward: Handler, port: int, *, fast_paths: bool = False) -> None:
    """Serve `forward` on POST /v1/chat/completions until SIGTERM ends the process.
    `fast_paths`: requests reach `forward` as they reach the router's handlers, without
    aiohttp's URL dispatch (router/fast_paths.py)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if fast_paths:
        from router.fast_paths import FastPaths

        server = runner.server
        assert server is not None
        server.request_handler = FastPaths(app, server.request_handler)
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(serve: Callable[[str, str, int], Awaitable[None]]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.upstream.rstrip("/"), args.key, args.port))


if __name__ == "__main__":
    main(serve)
