"""Requests for a fixed path reach their handler without aiohttp's URL dispatch; every
other request takes that dispatch unchanged (router/fast_paths.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from router.client_connection import ClientTimeouts
from router.config import parse_config
from router.fast_paths import FastPaths
from router.front_door import Runner
from router.server import bound_port, front_door, start
from tests.configs import preferring_a
from tests.conftest import HI, SIM_A, SIM_B, Stack
from tests.integration.test_secrets import raw_request

CHAT = json.dumps({"model": "gpt-4o", "messages": HI}).encode()


class Counted:
    """Counts the requests aiohttp's own dispatch served."""

    def __init__(self, dispatch: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]):
        self._dispatch = dispatch
        self.paths: list[str] = []

    def __call__(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        self.paths.append(request.raw_path)
        return self._dispatch(request)


@pytest.fixture
async def router(stack: Stack) -> AsyncIterator[tuple[str, Counted]]:
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    config = parse_config(preferring_a(sim_url), source="routes.yaml", environ={})
    runner = await start(config, "127.0.0.1", 0)
    try:
        handler = front_door(runner).request_handler
        assert isinstance(handler, FastPaths)
        counted = Counted(handler._slow)
        handler._slow = counted
        yield f"http://127.0.0.1:{bound_port(runner)}", counted
    finally:
        await runner.cleanup()


async def test_exact_paths_are_served_without_aiohttps_dispatch(router):
    url, dispatch = router
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", data=CHAT) as response:
            assert response.status == 200
            assert (await response.json())["object"] == "chat.completion"
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{url}/v1/models") as response:
            assert response.status == 200
    assert dispatch.paths == []


async def test_everything_else_takes_aiohttps_dispatch_and_is_answered_as_before(router):
    url, dispatch = router
    async with aiohttp.ClientSession() as session:
        # A query string: the raw path is not the route's string.
        async with session.post(f"{url}/v1/chat/completions?trace=1", data=CHAT) as response:
            assert response.status == 200
        # A method with no exact route on the path: the catch-all's answer.
        async with session.get(f"{url}/v1/chat/completions") as response:
            assert response.status == 405
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        # A path under the Anthropic API that is not one of its routes: its 404.
        async with session.post(f"{url}/v1/messages/batches", data=b"{}") as response:
            assert response.status == 404
            assert (await response.json())["type"] == "error"
    # An escaped letter (`%69` is `i`): the route the decoded path names serves it.
    answer = await raw_request(
        url,
        b"POST /v1/chat/complet%%69ons HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT),
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert dispatch.paths == [
        "/v1/chat/completions?trace=1",
        "/v1/chat/completions",
        "/v1/messages/batches",
        "/v1/chat/complet%69ons",
    ]


async def test_a_request_that_expects_100_continue_gets_it(router):
    url, dispatch = router
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(CHAT)
        )
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            writer.write(CHAT)
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert dispatch.paths == ["/v1/chat/completions"]


async def test_an_app_with_middleware_keeps_aiohttps_dispatch():
    seen: list[str] = []

    @web.middleware
    async def note(request: web.Request, handler):
        seen.append(request.path)
        return await handler(request)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application(middlewares=[note])
    app.router.add_post("/hello", hello)
    runner = Runner(
        app, reading=ClientTimeouts(head=10, body=10, send=10), max_head=65536, max_connections=8
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{bound_port(runner)}/hello"
            async with session.post(url) as response:
                assert await response.text() == "hello"
    finally:
        await runner.cleanup()
    assert seen == ["/hello"]


def _answers(text: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text)

    return handler


async def test_the_handler_is_the_one_aiohttps_dispatch_would_choose():
    """Where the routes' order decides (a path added twice, a route for any method
    before one for GET) or a domain's sub-app comes first, the fast table answers as
    aiohttp's dispatch does."""
    answers = {}
    for domain in (False, True):
        app = web.Application()
        app.router.add_get("/dup", _answers("first"), name="first")
        app.router.add_get("/dup", _answers("second"), name="second")
        app.router.add_route("*", "/any", _answers("any"), name="any")
        app.router.add_get("/any", _answers("get"), name="get")
        app.router.add_get("/hello", _answers("main"))
        if domain:
            sub = web.Application()
            sub.router.add_get("/hello", _answers("sub-app"))
            app.add_domain("example.com", sub)
        runner = Runner(
            app,
            reading=ClientTimeouts(head=10, body=10, send=10),
            max_head=65536,
            max_connections=8,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            url = f"http://127.0.0.1:{bound_port(runner)}"
            headers = {"Host": "example.com"}
            async with aiohttp.ClientSession() as session:
                for path in ("/dup", "/any", "/hello"):
                    async with session.get(url + path, headers=headers) as response:
                        answers[path, domain] = await response.text()
        finally:
            await runner.cleanup()
    assert answers == {
        ("/dup", False): "first",
        ("/any", False): "any",
        ("/hello", False): "main",
        # The domain's sub-app answers every request for its host, its 404 too.
        ("/dup", True): "404: Not Found",
        ("/any", True): "404: Not Found",
        ("/hello", True): "sub-app",
    }
