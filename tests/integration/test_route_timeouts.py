"""A model's and a route's own `timeouts:` through the real router: a slow reasoning model
gets a longer first_byte than the fast ones, without raising it for everyone."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from router.sim import Fault
from tests.configs import model, route, routes_yaml, sim_keys
from tests.conftest import HI, SIM_A, SIM_B, ask, client

SLOW = 1.5  # seconds before the slow upstream's first byte
GLOBAL = {"first_byte": 0.5}  # too short for it
LONG = {"first_byte": 3}  # long enough


def _config(sim_url: str, *, on_model: dict[str, Any], on_route: dict[str, Any]) -> str:
    """`fast` and `reasoner` on key a first, key b second; only `reasoner` may set its
    own timeouts (on the model, on its route on a, or both)."""
    reasoner_a = route("a", "gpt-4.1-mini", **({"timeouts": on_route} if on_route else {}))
    return routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B),
        models={
            "fast": model(route("a", "gpt-4o-mini"), route("b", "gpt-4o-mini", priority=2)),
            "reasoner": model(
                reasoner_a,
                route("b", "gpt-4.1-mini", priority=2),
                **({"timeouts": on_model} if on_model else {}),
            ),
        },
        timeouts=GLOBAL,
    )


@pytest.mark.parametrize(
    ("on_model", "on_route"),
    [
        pytest.param({}, LONG, id="route"),
        pytest.param(LONG, {}, id="model"),
        pytest.param({"first_byte": 0.2}, LONG, id="route-over-model"),
    ],
)
async def test_a_longer_first_byte_of_its_own_lets_the_slow_route_serve(
    stack, on_model: dict[str, Any], on_route: dict[str, Any]
) -> None:
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(_config(sim_url, on_model=on_model, on_route=on_route))
    sim.inject("a", Fault.delay(SLOW))
    headers, _ = await ask(url, "fast")
    # The global first_byte gave up on a: b served.
    assert (headers["x-router-route"], headers["x-router-attempts"]) == ("b/gpt-4o-mini", "2")
    sim.inject("a", Fault.delay(SLOW))
    headers, completion = await ask(url, "reasoner")
    assert (headers["x-router-route"], headers["x-router-attempts"]) == ("a/gpt-4.1-mini", "1")
    assert completion.choices[0].message.content == "Hello from a via gpt-4.1-mini."


async def test_a_streams_first_event_waits_for_the_routes_own_first_byte(stack) -> None:
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    url = await stack.router(_config(sim_url, on_model={}, on_route=LONG))
    for name, served_by in (("fast", "b/gpt-4o-mini"), ("reasoner", "a/gpt-4.1-mini")):
        sim.inject("a", Fault.delay(SLOW))
        async with client(url).chat.completions.with_streaming_response.create(
            model=name, messages=HI, stream=True
        ) as response:
            chunks = [chunk async for chunk in await response.parse()]
            assert response.headers["x-router-route"] == served_by
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"Hello from {served_by.replace('/', ' via ')}."


async def test_a_models_own_request_timeout_bounds_its_requests(stack) -> None:
    sim, sim_url = await stack.sim(SIM_A, SIM_B)
    config = routes_yaml(
        keys=sim_keys(sim_url, SIM_A, SIM_B),
        models={"quick": model(route("a", "gpt-4o"), timeouts={"request": 0.5})},
        timeouts={"first_byte": 30, "request": 600},
    )
    url = await stack.router(config)
    sim.inject("a", Fault.hang())
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(url, "quick")
    assert caught.value.status_code == 504
    assert caught.value.code == "request_deadline_exceeded"
    assert "request deadline of 0.5s" in caught.value.message
