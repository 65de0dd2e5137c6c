"""bench/passthrough.py on the router's own upstream client instead of aiohttp's.

    python bench/passthrough_lean.py --upstream http://127.0.0.1:PORT/v1 --key sk-... --port 0

The router talks to providers through router/http_client.py, which costs about half
of what aiohttp's ClientSession does per request. Against bench/passthrough.py the
router gains that; against this one, what is left is the cost of routing alone.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

from router.http_client import HttpClient


async def serve(upstream: str, key: str, port: int) -> None:
    client = HttpClient()
    url = upstream + "/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        up = await client.post(url, body, headers, connect_timeout=5)
        try:
            content_type = up.headers.get("Content-Type", "application/json")
            response = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
            await response.prepare(request)
            while chunk := await up.readany():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            up.release()

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM kills the process
    finally:
        client.close()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.upstream.rstrip("/"), args.key, args.port))
