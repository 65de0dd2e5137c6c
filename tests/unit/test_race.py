"""Which error a failed race raises (upstream/race.py): the last attempt's, as it is.

aiohappyeyeballs sums errors that differ into one OSError with no errno, and the router
tells its own failures (EADDRNOTAVAIL: its ephemeral ports ran out) from the upstream's
by the errno. The attempts' connects are made to fail here as the kernel would; nothing
is sent anywhere.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from router.upstream.race import connect_first

ADDRESSES = [(socket.AF_INET6, ("::1", 9)), (socket.AF_INET, ("127.0.0.1", 9))]


def _failing(monkeypatch: pytest.MonkeyPatch, errors: dict[int, BaseException]) -> None:
    loop = asyncio.get_running_loop()

    async def sock_connect(sock: socket.socket, address: tuple) -> None:
        raise errors[sock.family]

    monkeypatch.setattr(loop, "sock_connect", sock_connect)


async def test_errors_that_differ_raise_the_last_with_its_errno(monkeypatch):
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    no_port = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    _failing(monkeypatch, {socket.AF_INET6: unreachable, socket.AF_INET: no_port})
    with pytest.raises(OSError) as raised:
        await connect_first(asyncio.Protocol, ADDRESSES, ssl=None, server_hostname=None)
    assert raised.value is no_port


async def test_a_runtime_error_from_the_loop_is_an_oserror(monkeypatch):
    """uvloop's sock_connect may raise RuntimeError, which no failover catches."""
    in_use = RuntimeError("File descriptor 7 is used by transport")
    _failing(monkeypatch, {socket.AF_INET6: in_use, socket.AF_INET: in_use})
    with pytest.raises(OSError, match="RuntimeError: File descriptor 7"):
        await connect_first(asyncio.Protocol, ADDRESSES, ssl=None, server_hostname=None)
