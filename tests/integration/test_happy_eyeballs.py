"""A host name with several addresses, one of which drops packets (upstream/resolver.py).

An address that drops packets is stood in for by a listening socket whose accept queue
is full: Linux drops each further SYN, so a connect to it hangs as one to a blackholed
IPv6 route does. The host name's answer is given by the test (the Resolver's `lookup`,
or a getaddrinfo patched for the router), with the ports told apart, so every socket
here is on 127.0.0.1. Before Happy Eyeballs, the addresses were tried one after the
other, and the first one took the whole connect timeout of each new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator

import pytest

from router.upstream.resolver import Resolver
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, SIM_A, client
from tests.tls import tls_contexts

BOTH_LOOPS = True


@contextlib.contextmanager
def dropping_address() -> Iterator[tuple[str, int]]:
    """An address whose connects hang: a listener with a full accept queue."""
    listener = socket.socket()
    filler = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        filler.connect(address)  # the queue's one place; never accepted
        yield address
    finally:
        filler.close()
        listener.close()


def _closed_port() -> int:
    """A port nothing listens on: connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_an_address_that_drops_connects_gives_way_to_the_next():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    good = server.sockets[0].getsockname()
    try:
        with dropping_address() as dropping:
            both = [(socket.AF_INET, dropping), (socket.AF_INET, good)]
            resolver = Resolver(lookup=lambda host, port: both)
            async with asyncio.timeout(3):  # the drop alone would hang past it
                transport, _ = await resolver.connect(asyncio.Protocol, "dual.test", good[1])
            assert transport.get_extra_info("peername")[:2] == good
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            transport.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_goes_to_the_address_that_answered_by_the_name_asked():
    server_context, trusting, _ = tls_contexts("provider.test")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server_context)
    good = server.sockets[0].getsockname()
    try:
        with dropping_address() as dropping:
            both = [(socket.AF_INET, dropping), (socket.AF_INET, good)]
            resolver = Resolver(lookup=lambda host, port: both)
            async with asyncio.timeout(3):
                transport, _ = await resolver.connect(
                    asyncio.Protocol, "provider.test", good[1], ssl=trusting,
                    server_hostname="provider.test",
                )  # fmt: skip
            assert transport.get_extra_info("peername")[:2] == good
            assert transport.get_extra_info("ssl_object").server_hostname == "provider.test"
            transport.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("first_host", "family"), [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]
)
async def test_a_handshake_that_fails_on_the_winner_moves_to_the_next_address(
    first_host: str, family: int
):
    """The first address connects and then hangs up in the TLS handshake (a load balancer
    going away): the other addresses race again, as they were tried in turn before. Over
    IPv6 first, as a dual-stack host lists it, the winner's address was once found again
    by its peer name, which an IPv6 socket gives as four fields: it was not found, and
    the hang-up was the answer."""
    server_context, trusting, _ = tls_contexts("provider.test")
    hangs_up = await asyncio.start_server(lambda r, w: w.close(), first_host, 0)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server_context)
    first, good = hangs_up.sockets[0].getsockname()[:2], server.sockets[0].getsockname()
    resolver = Resolver(lookup=lambda host, port: [(family, first), (socket.AF_INET, good)])
    try:
        async with asyncio.timeout(3):
            transport, _ = await resolver.connect(
                asyncio.Protocol, "provider.test", good[1], ssl=trusting
            )  # server_hostname: the name asked
        assert transport.get_extra_info("peername")[:2] == good
        transport.close()
    finally:
        for listening in (hangs_up, server):
            listening.close()
            await listening.wait_closed()


async def test_every_address_refused_is_the_refusal():
    refused = [(socket.AF_INET, ("127.0.0.1", _closed_port())) for _ in range(2)]
    resolver = Resolver(lookup=lambda host, port: refused)
    with pytest.raises(ConnectionRefusedError):  # the last one's, not a summary
        await resolver.connect(asyncio.Protocol, "down.test", 443)


async def test_a_connect_timeout_during_the_race_leaves_no_socket_open():
    with dropping_address() as one, dropping_address() as other:
        both = [(socket.AF_INET, one), (socket.AF_INET, other)]
        resolver = Resolver(lookup=lambda host, port: both)

        async def give_up() -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.4):  # both attempts are in flight by then (0.25 s)
                    await resolver.connect(asyncio.Protocol, "dropping.test", one[1])

        await give_up()  # the first: a loop may open a descriptor of its own for good
        before = _open_fds()
        for _ in range(2):
            await give_up()
        await asyncio.sleep(0)
        assert _open_fds() == before


async def test_the_router_serves_through_the_address_that_answers(stack, monkeypatch):
    _sim, sim_url = await stack.sim(SIM_A)
    port = int(sim_url.rsplit(":", 1)[1].split("/")[0])
    with dropping_address() as dropping:
        real = socket.getaddrinfo

        def getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
            if host != "dual.test":
                return real(host, *args, **kwargs)  # type: ignore[arg-type]
            tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(socket.AF_INET, *tcp, dropping), (socket.AF_INET, *tcp, ("127.0.0.1", port))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        url = await stack.router(
            routes_yaml(
                keys=[key("a", f"http://dual.test:{port}/v1", api_key=SIM_A.api_key)],
                models={"gpt-4o": model(route("a", "gpt-4o"))},
                timeouts={"connect": 2},
            )
        )
        raw = (
            await client(url)
            .with_options(max_retries=0)
            .chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        )
    assert raw.headers["x-router-attempts"] == "1"  # no connect timeout before it
    assert raw.parse().choices[0].message.content == "Hello from a via gpt-4o."
