"""bench/passthrough.py on the router's own upstream client instead of aiohttp's.

    python bench/passthrough_lean.py --upstream http://127.0.0.1:PORT/v1 --key sk-... --port 0

The router talks to providers through router/upstream/client.py, which costs about half
of what aiohttp's ClientSession does per request. Against bench/passthrough.py the
router gains that; against this one, what is left is the cost of routing alone. It
reaches its handler as the router's do, past aiohttp's URL dispatch (router/fast_paths.py).
"""

from __future__ import annotations

from aiohttp import web
from passthrough import listen, main  # bench/ is first on the path of a script run here

from router.upstream.client import HttpClient


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

    try:
        await listen(forward, port, fast_paths=True)
    finally:
        client.close()


if __name__ == "__main__":
    main(serve)
