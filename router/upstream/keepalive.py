"""TCP keepalive on every connection to a provider (or to its proxy), as the Anthropic SDK
sets it on its own: probes after 60 s without traffic, every 60 s, five of them.

A non-streamed answer from a reasoning model can take minutes with no byte on the
connection (`first_byte` up to 600 s is a documented setting). NAT gateways and load
balancers forget a flow idle that long (an AWS NAT gateway after 350 s, an Azure load
balancer after 4 minutes by default), and the answer then never arrives: the request
waited out its timeout and was charged to the route. A probe each minute keeps the flow
known; a peer gone without a word is found after about six minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

IDLE_SECONDS = 60
INTERVAL_SECONDS = 60
PROBES = 5

# (option, value); a platform without one (TCP_KEEPIDLE is Linux's name) goes without it.
_TCP_OPTIONS = tuple(
    (option, value)
    for name, value in (
        ("TCP_KEEPIDLE", IDLE_SECONDS),
        ("TCP_KEEPINTVL", INTERVAL_SECONDS),
        ("TCP_KEEPCNT", PROBES),
    )
    if (option := getattr(socket, name, None)) is not None
)

# The same, as `(level, option, value)` for an httpx transport's `socket_options` (the
# clients the router builds for litellm: translate/litellm_internals.py). httpcore's
# HTTPProxy does not hand them to its connections: through a key's proxy they are lost.
SOCKET_OPTIONS = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *((socket.IPPROTO_TCP, option, value) for option, value in _TCP_OPTIONS),
)


def keep_alive(transport: asyncio.BaseTransport) -> None:
    """Keepalive probes on `transport`'s socket, when it has one."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):  # a socket closed meanwhile: nothing to keep
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in _TCP_OPTIONS:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
