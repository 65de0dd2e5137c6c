"""`python -m router.probe`: the container's health check, on the port routes.yaml sets.

GET /healthz on server.host and server.port of the config ($LLM_ROUTER_CONFIG, else
routes.yaml; or --config), each read with a whole-value `${VAR}` / `${VAR:-default}`
expanded as the loader does (`port: ${PORT:-4000}`). A wildcard or loopback host is
reached on loopback. Exit 0 on a 2xx, 1 (and one line on stderr) on anything else.

It runs every few seconds beside the router, so it reads only those two fields with
pyyaml and imports nothing else of the router but its defaults (router.types).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from router.files import read_regular
from router.types import ServerSettings

# As router/config/fields.py's _VARIABLE, for a value that is one whole reference.
_WHOLE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")
_DEFAULTS = ServerSettings()
MAX_PROBE_CONFIG_BYTES = 16 * 1024 * 1024  # as load_config's


class ProbeError(Exception):
    """The config does not say where the router listens."""


def target(text: str, environ: Mapping[str, str]) -> tuple[str, int]:
    """(host to connect to, port) from a routes.yaml text."""
    document = yaml.safe_load(text)
    server = document.get("server") if isinstance(document, dict) else None
    server = server if isinstance(server, dict) else {}
    host = str(_expanded(server.get("host", _DEFAULTS.host), environ))
    port = _expanded(server.get("port", _DEFAULTS.port), environ)
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ProbeError(f"server.port is not a port number: {port!r}") from None
    if not 0 < number < 65536:
        raise ProbeError(f"server.port {number} cannot be probed (0 picks a free port)")
    return _reachable(host), number


def _expanded(value: Any, environ: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    match = _WHOLE_VARIABLE.fullmatch(value.strip())
    if match is None:
        return value
    name, default = match.groups()
    found = environ.get(name) or default  # empty counts as unset, as in the loader
    if found is None:
        raise ProbeError(f"{name} is not set (server: {value})")
    return found


def _reachable(host: str) -> str:
    """Where to connect for a router bound to `host`: loopback for a wildcard."""
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return bare  # a name: connect to it as configured
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return bare


def probe(host: str, port: int, timeout: float) -> None:
    """Raise ProbeError unless GET /healthz answers 2xx within `timeout` seconds."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/healthz"
    # Straight to the router: HTTP_PROXY, set for the router's own egress, must not apply.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"{url} answered {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{url}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.probe",
        description="Exit 0 when the router answers GET /healthz on its configured port.",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("LLM_ROUTER_CONFIG", "routes.yaml"),
        help="routes.yaml path (default: $LLM_ROUTER_CONFIG, else routes.yaml)",
    )
    parser.add_argument("--host", help="instead of server.host (as serve --host)")
    parser.add_argument("--port", type=int, help="instead of server.port (as serve --port)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    try:
        host, port = args.host, args.port
        if host is None or port is None:
            try:
                # Not a plain open(): a FIFO at the path would hang the probe past its
                # --timeout, and /dev/zero would be read without end (router/files.py).
                text = read_regular(args.config, MAX_PROBE_CONFIG_BYTES).decode("utf-8")
            except OSError as exc:
                raise ProbeError(f"{args.config}: cannot read: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise ProbeError(f"{args.config}: not UTF-8 text") from None
            configured = target(text, os.environ)
            host = configured[0] if host is None else _reachable(host)
            port = configured[1] if port is None else port
        probe(host, port, args.timeout)
    except (ProbeError, yaml.YAMLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
