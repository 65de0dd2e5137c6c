"""Upstream host names: one that resolves slowly holds up no other (upstream/resolver.py).

The system resolver is stood in for by a getaddrinfo that answers `fast.test` at once
(127.0.0.1, where the simulator listens) and holds every lookup of `slow.test` until the
test lets it go, as a DNS server that times out does. Before the resolver, lookups ran
on a pool every name shared, and a connect timeout did not end its lookup: requests to
the slow name took the pool, and the fast name's requests timed out behind them (shown
under uvloop, whose pool has four threads, with a stub DNS server in a network
namespace, which a test here cannot set up; here the count of lookups shows it).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from router.upstream.resolver import Resolver
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, SIM_A, SIM_B, client

_real_getaddrinfo = socket.getaddrinfo


class SlowDNS:
    """`slow.test` answers only once released; `fast.test` is 127.0.0.1 at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked: dict[str, int] = {}

    def __call__(self, host: str, port: int, *args: object, **kwargs: object) -> list:
        self.asked[host] = self.asked.get(host, 0) + 1
        if host == "slow.test":
            self.release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "fast.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return _real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowDNS]:
    slow = SlowDNS()
    monkeypatch.setattr(socket, "getaddrinfo", slow)
    yield slow
    slow.release.set()  # the resolver's threads end with their lookups


async def test_a_name_that_resolves_slowly_holds_up_no_other(stack, dns):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B)
    port = int(sim_url.rsplit(":", 1)[1].split("/")[0])
    url = await stack.router(
        routes_yaml(
            keys=[
                key("slow", f"http://slow.test:{port}/v1", api_key=SIM_A.api_key),
                key("fast", f"http://fast.test:{port}/v1", api_key=SIM_B.api_key),
            ],
            models={
                "slow-model": model(route("slow", "gpt-4o")),
                "fast-model": model(route("fast", "gpt-4o")),
            },
            timeouts={"connect": 0.5, "request": 2},
        )
    )
    openai = client(url)
    # Forty requests wait for the slow name (each gives up at its connect timeout): more
    # than asyncio's default executor has threads (32 at most), and uvloop's pool has
    # four. Meanwhile every request for the fast one is answered.
    slow = [
        asyncio.create_task(openai.with_options(max_retries=0).chat.completions.create(
            model="slow-model", messages=HI
        ))
        for _ in range(40)
    ]  # fmt: skip
    await asyncio.sleep(0.1)
    for _ in range(10):
        completion = await openai.chat.completions.create(model="fast-model", messages=HI)
        assert completion.choices[0].message.content == "Hello from b via gpt-4o."
    results = await asyncio.gather(*slow, return_exceptions=True)
    assert all(getattr(result, "status_code", None) == 503 for result in results), results
    assert dns.asked["slow.test"] == 1  # one lookup for all forty, still waiting
    assert dns.asked["fast.test"] == 1  # looked up once, its answer kept


async def test_the_last_answer_serves_when_a_new_lookup_fails():
    answers: list[object] = [[(socket.AF_INET, ("127.0.0.1", 443))], socket.gaierror("down")]
    now = [0.0]

    def lookup(host: str, port: int) -> list:
        if host == "never.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    resolver = Resolver(ttl=10.0, lookup=lookup, clock=lambda: now[0])
    first = await resolver.addresses("provider.test", 443)
    assert await resolver.addresses("provider.test", 443) == first  # kept, not asked
    now[0] = 11.0  # past its ttl: asked again, and the resolver fails
    assert await resolver.addresses("provider.test", 443) == first
    assert answers == []
    with pytest.raises(socket.gaierror):
        await resolver.addresses("never.test", 443)  # no answer to fall back on


async def test_a_literal_address_is_never_looked_up():
    def lookup(host: str, port: int) -> list:
        raise AssertionError(f"looked up {host}")

    resolver = Resolver(lookup=lookup)
    assert await resolver.addresses("127.0.0.1", 80) == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert await resolver.addresses("[::1]", 80) == [(socket.AF_INET6, ("::1", 80))]
