"""TCP keepalive on the router's connections to providers (upstream/keepalive.py).

What the kernel does with a socket is read from /proc/net/tcp, as `ss -o` reads it: an
idle established connection with SO_KEEPALIVE has its keepalive timer running (timer 2)
and due within TCP_KEEPIDLE; one without has no timer.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from router.upstream.keepalive import IDLE_SECONDS
from router.upstream.resolver import Resolver
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, SIM_A, client

BOTH_LOOPS = True
PROC_TCP = Path("/proc/net/tcp")
USER_HZ = 100  # /proc/net/tcp's timer is in clock ticks

pytestmark = pytest.mark.skipif(not PROC_TCP.exists(), reason="needs Linux's /proc/net/tcp")


def timers_to(port: int) -> list[tuple[int, float]]:
    """(timer, seconds until it is due) of each established IPv4 connection to `port`."""
    found = []
    for line in PROC_TCP.read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01":  # ESTABLISHED
            timer, due = fields[5].split(":")
            found.append((int(timer, 16), int(due, 16) / USER_HZ))
    return found


def _keepalive(timers: list[tuple[int, float]]) -> bool:
    return bool(timers) and all(t == 2 and 0 < due <= IDLE_SECONDS for t, due in timers)


async def test_the_routers_connection_to_a_provider_sends_keepalive_probes(stack):
    _sim, sim_url = await stack.sim(SIM_A)
    port = int(sim_url.rsplit(":", 1)[1].split("/")[0])
    url = await stack.router(
        routes_yaml(
            keys=[key("a", sim_url, api_key=SIM_A.api_key)],
            models={"gpt-4o": model(route("a", "gpt-4o"))},
        )
    )
    completion = await client(url).chat.completions.create(model="gpt-4o", messages=HI)
    assert completion.choices[0].message.content == "Hello from a via gpt-4o."
    timers = timers_to(port)  # the router's pooled connection, idle now
    assert len(timers) == 1 and _keepalive(timers), timers


async def test_the_connection_that_wins_a_race_sends_keepalive_probes():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    good = server.sockets[0].getsockname()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
    both = [(socket.AF_INET, refused.getsockname()), (socket.AF_INET, good)]
    resolver = Resolver(lookup=lambda host, port: both)
    try:
        transport, _ = await resolver.connect(asyncio.Protocol, "dual.test", good[1])
        await asyncio.sleep(0.05)
        assert _keepalive(timers_to(good[1])), timers_to(good[1])
        transport.close()
    finally:
        refused.close()
        server.close()
        await server.wait_closed()


def test_a_plain_socket_has_no_keepalive_timer():
    """The reading itself: without SO_KEEPALIVE there is no timer to find."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            assert timers_to(port) == [(0, 0.0)]
