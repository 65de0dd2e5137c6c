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
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from router.upstream.resolver import Resolver, _getaddrinfo
from tests.configs import key, model, route, routes_yaml
from tests.conftest import HI, SIM_A, SIM_B, client
from tests.tls import tls_contexts

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
    now[0] = 11.0  # past its ttl: served as it is, and asked again; the resolver fails
    assert await resolver.addresses("provider.test", 443) == first
    await _settled(resolver)
    assert answers == []
    now[0] = 20.0  # within the ttl the failure gave the last answer: not asked again
    assert await resolver.addresses("provider.test", 443) == first
    assert not resolver._pending
    with pytest.raises(socket.gaierror):
        await resolver.addresses("never.test", 443)  # no answer to fall back on


async def _settled(resolver: Resolver) -> None:
    """Until the lookups in flight have ended (a refresh runs behind the answer)."""
    async with asyncio.timeout(10):
        while resolver._pending:  # noqa: ASYNC110 - a thread's lookup, then its callback
            await asyncio.sleep(0.005)


async def test_a_name_that_no_longer_exists_keeps_no_stale_answer():
    """EAI_NONAME is the resolver's answer, not its failure: the old addresses may be
    someone else's now, and would get the requests and their keys."""
    answers: list[object] = [
        [(socket.AF_INET, ("10.0.0.1", 443))],
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ]

    def lookup(host: str, port: int) -> list:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    now = [0.0]
    resolver = Resolver(ttl=10.0, lookup=lookup, clock=lambda: now[0])
    await resolver.addresses("moved.test", 443)
    now[0] = 11.0
    await resolver.addresses("moved.test", 443)  # the stale answer, one last time
    await _settled(resolver)
    answers.append(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(socket.gaierror):
        await resolver.addresses("moved.test", 443)


async def test_a_stale_answer_is_served_an_hour_at_most():
    calls: list[str] = []

    def lookup(host: str, port: int) -> list:
        calls.append(host)
        if len(calls) == 1:
            return [(socket.AF_INET, ("10.0.0.1", 443))]
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    now = [0.0]
    resolver = Resolver(ttl=10.0, lookup=lookup, clock=lambda: now[0])
    await resolver.addresses("flaky.test", 443)
    now[0] = 3_000.0
    await resolver.addresses("flaky.test", 443)  # stale, within the hour
    await _settled(resolver)
    now[0] = 3_700.0  # past the hour: the answer is not served, the failure is said
    with pytest.raises(socket.gaierror):
        await resolver.addresses("flaky.test", 443)


async def test_a_literal_address_is_never_looked_up():
    def lookup(host: str, port: int) -> list:
        raise AssertionError(f"looked up {host}")

    resolver = Resolver(lookup=lookup)
    assert await resolver.addresses("127.0.0.1", 80) == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert await resolver.addresses("[::1]", 80) == [(socket.AF_INET6, ("::1", 80))]


async def test_an_answer_out_of_date_serves_while_the_name_is_looked_up_again():
    """A name whose DNS starts to time out keeps its last addresses at once: before, each
    request waited for the new lookup and spent its connect timeout."""
    release = threading.Event()
    asked: list[str] = []

    def lookup(host: str, port: int) -> list:
        asked.append(host)
        if len(asked) > 1:
            release.wait(30)  # the second lookup hangs until the test ends
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, ("127.0.0.1", port))]

    now = [0.0]
    resolver = Resolver(ttl=10.0, lookup=lookup, clock=lambda: now[0])
    try:
        first = await resolver.addresses("provider.test", 443)
        now[0] = 11.0
        for _ in range(5):  # at once, each: the one lookup runs meanwhile
            assert await asyncio.wait_for(resolver.addresses("provider.test", 443), 1.0) == first
        assert asked == ["provider.test", "provider.test"]
    finally:
        release.set()


async def test_no_address_is_the_resolvers_error_and_is_asked_again():
    asked: list[str] = []

    def lookup(host: str, port: int) -> list:
        asked.append(host)
        return []

    resolver = Resolver(lookup=lookup)
    for _ in range(2):
        with pytest.raises(socket.gaierror, match="no address"):
            await resolver.addresses("empty.test", 443)
    assert asked == ["empty.test", "empty.test"]  # not kept


def test_a_scoped_link_local_answer_keeps_its_interface(monkeypatch: pytest.MonkeyPatch):
    """mDNS answers `*.local` with fe80:: addresses, which connect only with their
    interface: the scope id was dropped, and the connect failed (EINVAL)."""
    scoped = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1", 11434, 0, 1))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: scoped)
    interface = socket.if_indextoname(1)
    assert _getaddrinfo("box.local", 11434) == [(socket.AF_INET6, (f"fe80::1%{interface}", 11434))]


async def test_a_certificate_refused_is_not_tried_again_on_the_next_address():
    """The provider's certificate is wrong on every address: the first refusal is the
    answer (before, the next address's 'connection refused' hid it)."""
    server_context, trusting, _ = tls_contexts("someone-else.test")
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    both = [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET, ("127.0.0.1", closed_port))]
    resolver = Resolver(lookup=lambda host, port: both)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await resolver.connect(
                asyncio.Protocol, "provider.test", port, ssl=trusting,
                server_hostname="provider.test",
            )  # fmt: skip
    finally:
        server.close()
        await server.wait_closed()


def test_a_lookup_left_by_a_closed_loop_does_not_stick_to_the_name():
    """A lookup still running when its event loop closed stayed the name's pending one:
    every later request on another loop failed with 'attached to a different loop'."""
    release = threading.Event()
    calls: list[int] = []

    def lookup(host: str, port: int) -> list:
        calls.append(port)
        if len(calls) == 1:
            release.wait(30)
        return [(socket.AF_INET, ("127.0.0.1", port))]

    resolver = Resolver(lookup=lookup)

    async def give_up() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(resolver.addresses("provider.test", 443), 0.05)

    asyncio.run(give_up())  # its loop closes with the lookup still running
    try:
        found = asyncio.run(resolver.addresses("provider.test", 443))
        assert found == [(socket.AF_INET, ("127.0.0.1", 443))]
    finally:
        release.set()
