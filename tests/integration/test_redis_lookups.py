"""The Redis state store's host name, looked up as the upstreams' are (health/redis_connection.py).

redis-py looked the name up on the pool every lookup in the process shares (the loop's
default executor; uvloop: libuv's four threads), and its connect timeout did not end a
lookup: a Redis name whose DNS hangs had each reconnect hold a thread until the pool was
full, and litellm's requests, and the exit, waited behind them. The system resolver is
stood in for by a getaddrinfo that holds `hang.test` until the test lets it go, says
`missing.test` does not exist, and gives `both.test` an IPv6 address nothing listens on
before 127.0.0.1. The default executor is cut to two threads, as small a pool as
uvloop's, so that the test can fill it. Every server is on 127.0.0.1 (or ::1, refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
import trustme
from redis.asyncio.connection import Connection, ConnectionPool

from router.health.memory import MemoryStore
from router.health.redis_connection import _Resolving
from router.health.redis_store import RedisStore
from router.sim import Fault
from router.upstream.resolver import Resolver
from tests.configs import preferring_a
from tests.conftest import HI, SIM_A, SIM_B, SIM_C, client
from tests.integration.test_shared_state import (
    RedisServer,
    _free_port,
    _readyz,
    _route_state,
    shared,
    until,
)

pytestmark = pytest.mark.timeout(60)
BOTH_LOOPS = True  # the router serves on uvloop: its sockets and TLS too

_real_getaddrinfo = socket.getaddrinfo


class StubDNS:
    """The system resolver, with three names of the test's own; who asked is kept."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked: list[tuple[str, str]] = []  # (host, the asking thread's name)

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.asked.append((host, threading.current_thread().name))
        if host == "hang.test":  # a DNS server that does not answer
            self.release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "missing.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == "both.test":
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return _real_getaddrinfo(host, port, *args, **kwargs)

    def threads(self, host: str) -> set[str]:
        return {thread for asked, thread in self.asked if asked == host}


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubDNS]:
    stub = StubDNS()
    monkeypatch.setattr(socket, "getaddrinfo", stub)
    try:
        yield stub
    finally:
        stub.release.set()  # the lookups held end, and their threads


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    try:
        await server.start()
        yield server
    finally:
        await server.kill()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "both.test"])
async def test_replicas_share_state_through_a_redis_named_by_host_name_or_address(
    host, redis_server, stack, dns
):
    sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    text = preferring_a(sim_url, **shared(f"redis://{host}:{redis_server.port}/0"))
    replica_a, replica_b = await stack.router(text), await stack.router(text)
    sim.inject("a", Fault.rate_limit(retry_after=30))
    raw = await client(replica_a).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI
    )
    assert raw.headers["x-router-route"] == "b/gpt-4o"

    async def b_knows() -> bool:
        return (await _route_state(replica_b, "a/gpt-4o"))["state"] == "cooling_down"

    await until(b_knows, seconds=2.0)
    for url in (replica_a, replica_b):
        _status, body = await _readyz(url)
        assert body["state_store"]["status"] != "degraded", body
    if host != "127.0.0.1":  # a name: looked up by the router's resolver, off the shared pool
        assert dns.threads(host) == {f"resolve {host}"}


async def test_a_redis_name_whose_dns_hangs_leaves_the_processs_lookups_free(stack, dns):
    """Reconnects go on (writer, subscriber, reader, each with its backoff), one lookup
    of the name at most is under way, and a lookup of another name through the loop (as
    litellm's HTTP client makes) answers at once. Before, the reconnects' lookups took
    both threads of the pool and it timed out."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))  # shut down with the loop
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    url = await stack.router(preferring_a(sim_url, **shared(f"redis://hang.test:{_free_port()}/0")))

    async def degraded() -> bool:
        status, body = await _readyz(url)
        return status == 200 and body["state_store"]["status"] == "degraded"

    await until(degraded)
    await asyncio.sleep(1.2)  # reconnects meanwhile: the backoff starts at 0.5 s
    started = time.monotonic()
    async with asyncio.timeout(2.0):
        await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert time.monotonic() - started < 1.0
    assert [host for host, _ in dns.asked].count("hang.test") == 1
    assert dns.threads("hang.test") == {"resolve hang.test"}


async def test_a_redis_name_that_does_not_resolve_shows_the_store_degraded(stack, dns):
    _sim, sim_url = await stack.sim(SIM_A, SIM_B, SIM_C)
    nowhere = f"redis://missing.test:{_free_port()}/0"
    url = await stack.router(preferring_a(sim_url, **shared(nowhere)))
    await client(url).chat.completions.create(model="gpt-4o", messages=HI)

    async def degraded() -> bool:
        status, body = await _readyz(url)
        return status == 200 and body["state_store"]["status"] == "degraded"

    await until(degraded)
    _status, body = await _readyz(url)
    assert "missing.test" in str(body["state_store"]), body
    assert dns.threads("missing.test") == {"resolve missing.test"}


@contextlib.asynccontextmanager
async def tls_redis(tmp_path: Path, certified: str) -> AsyncIterator[tuple[int, Path]]:
    """A redis-server on 127.0.0.1 that speaks TLS only, its certificate for `certified`;
    yields its port and the authority's bundle."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    authority = trustme.CA()
    issued = authority.issue_cert(certified)
    cert, key, bundle = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(bundle))
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(bundle), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--protected-mode", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.02)
        yield port, bundle
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@pytest.mark.parametrize(
    ("certified", "works"),
    [pytest.param("localhost", True, id="its-name"), pytest.param("other.test", False, id="other")],
)
async def test_a_tls_redis_certificate_is_checked_against_the_host_name(
    certified, works, tmp_path, dns
):
    """Connected to the address the resolver gave (127.0.0.1), the certificate is still
    checked against the URL's name: a certificate for `localhost` alone serves, one for
    another name is refused."""
    async with tls_redis(tmp_path, certified) as (port, bundle):
        url = (
            f"rediss://localhost:{port}/0?ssl_ca_certs={quote(str(bundle))}"
            "&ssl_check_hostname=true&ssl_cert_reqs=required"
        )
        store = RedisStore(
            MemoryStore(time.monotonic),
            url,
            "tls",
            time.monotonic,
            open_socket=Resolver().open_socket,
        )
        store.start()
        try:
            if works:
                async with asyncio.timeout(5):
                    await store.loaded()
                assert store.degraded() is None
            else:

                async def refused() -> bool:
                    return store.degraded() is not None

                await until(refused)
                problem = store.degraded() or ""
                # redis-py 5.0.1 words an SSL error by its number alone (1: SSL_ERROR_SSL).
                assert "certificate" in problem.lower() or "Error 1 connecting" in problem
        finally:
            await store.close()
    assert dns.threads("localhost") == {"resolve localhost"}


class _ArgumentsOfAnotherKind(Connection):
    """A redis-py whose connect arguments are not host, port and TLS alone."""

    def _connection_arguments(self) -> Mapping[str, Any]:
        return {**super()._connection_arguments(), "limit": 2**16}


class _ConnectsWithoutArguments(Connection):
    """A redis-py whose connect does not ask for its arguments."""

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)


class _Unexpected(_Resolving, _ArgumentsOfAnotherKind):
    pass


class _Unasked(_Resolving, _ConnectsWithoutArguments):
    pass


@pytest.mark.parametrize("connection_class", [_Unexpected, _Unasked], ids=["other-args", "unasked"])
async def test_a_redis_py_whose_hook_differs_connects_as_it_always_did(
    connection_class, redis_server, dns
):
    """The override reads redis-py's own connect step; where that step is not as expected,
    the connection is redis-py's, and a socket opened for it is not left open."""
    opened: list[socket.socket] = []

    async def open_socket(host: str, port: int) -> socket.socket:
        opened.append(await Resolver().open_socket(host, port))
        return opened[-1]

    pool = ConnectionPool(
        connection_class=connection_class,
        open_socket=open_socket,
        host="localhost",
        port=redis_server.port,
    )
    redis = aioredis.Redis(connection_pool=pool)
    try:
        assert await redis.ping()
    finally:
        await redis.aclose()
    assert all(sock.fileno() == -1 for sock in opened)  # closed
