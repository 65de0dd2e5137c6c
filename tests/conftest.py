"""Fixtures: real simulated providers and real routers on 127.0.0.1, always cleaned up."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.config import parse_config
from router.server import bound_port, start
from router.sim import SimKey, SimProvider
from tests.clock import FakeClock

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

REPO = Path(__file__).resolve().parent.parent
HI = [{"role": "user", "content": "hi"}]  # the chat most tests send


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, LoopFactory]:
    """asyncio's loop for every test; a module that sets BOTH_LOOPS runs on uvloop too."""
    module = getattr(item, "module", None)
    if getattr(module, "BOTH_LOOPS", False):
        import uvloop

        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


class Stack:
    """Starts simulated providers and routers for one test and stops them all after it."""

    def __init__(self) -> None:
        self._exit = AsyncExitStack()

    async def sim(
        self, *keys: SimKey, clock: Callable[[], float] = time.monotonic
    ) -> tuple[SimProvider, str]:
        provider = SimProvider(keys=keys, clock=clock)
        url = await self._exit.enter_async_context(provider.serve())
        return provider, url

    async def router(
        self,
        yaml_text: str,
        *,
        clock: Callable[[], float] | None = None,
        seed: int = 0,
        environ: dict[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        wall: Callable[[], float] | None = None,
    ) -> str:
        config = parse_config(yaml_text, source="routes.yaml", environ=environ or {})
        app_args: dict[str, Any] = {"rng": random.Random(seed)}
        if clock is not None:
            app_args["clock"] = clock
        if registry is not None:
            app_args["registry"] = registry
        if wall is not None:
            app_args["wall"] = wall
        runner = await start(config, "127.0.0.1", 0, **app_args)
        self._exit.push_async_callback(runner.cleanup)
        return f"http://127.0.0.1:{bound_port(runner)}"

    async def close(self) -> None:
        await self._exit.aclose()


@asynccontextmanager
async def raw_upstream(path: str, handler: Callable[..., Any]) -> AsyncIterator[str]:
    """A bare aiohttp server on 127.0.0.1 that answers POST `path` with `handler`, for
    upstream behaviour the simulator does not script. Yields its base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    resources = Stack()
    try:
        yield resources
    finally:
        await resources.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def admin_state(router_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The router's /admin/routes, as (routes by route id, keys by key name)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{router_url}/admin/routes") as response,
    ):
        state = await response.json()
    return {r["route"]: r for r in state["routes"]}, {k["key"]: k for k in state["keys"]}


def client(router_url: str, **kwargs: Any) -> openai.AsyncOpenAI:
    """The official SDK pointed at the router, with its own retries off so tests see
    exactly what the router answered."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 20)
    return openai.AsyncOpenAI(base_url=f"{router_url}/v1", api_key="client-token", **kwargs)


def sync_client(router_url: str, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 20)
    return openai.OpenAI(base_url=f"{router_url}/v1", api_key="client-token", **kwargs)


async def ask(router_url: str, model: str = "gpt-4o", **kwargs: Any) -> tuple[Any, Any]:
    """HI through the async SDK: (the response headers, the parsed completion). A refusal
    raises the SDK's error."""
    raw = await client(router_url).chat.completions.with_raw_response.create(
        model=model, messages=HI, **kwargs
    )
    return raw.headers, raw.parse()


SIM_A = SimKey(name="a", api_key="sk-sim-key-a-000001")
SIM_B = SimKey(name="b", api_key="sk-sim-key-b-000002")
SIM_C = SimKey(name="c", api_key="sk-sim-key-c-000003")
