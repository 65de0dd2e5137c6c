"""A real HTTP proxy for the tests: Debian's tinyproxy, in the foreground on 127.0.0.1,
with a config file written per test and stopped when the test ends."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A port nothing listens on (bound and released: connecting there is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Tinyproxy:
    port: int
    url: str  # http://[user:password@]127.0.0.1:port
    log_path: Path
    process: asyncio.subprocess.Process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@asynccontextmanager
async def tinyproxy(
    directory: Path,
    *,
    connect_ports: Iterable[int] = (),
    credentials: tuple[str, str] | None = None,
) -> AsyncIterator[Tinyproxy]:
    """tinyproxy allowing CONNECT to `connect_ports` only (no ConnectPort line: any port,
    tinyproxy's documented default), asking for `credentials` when given."""
    binary = shutil.which("tinyproxy")
    if binary is None:
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    for _ in range(3):  # a free port can be taken between the probe and tinyproxy's bind
        port, process, log_path = await _start(binary, directory, connect_ports, credentials)
        if process is not None:
            break
    else:
        raise RuntimeError(f"tinyproxy did not start: {log_path.read_text()}")
    try:
        userinfo = f"{credentials[0]}:{credentials[1]}@" if credentials else ""
        yield Tinyproxy(port, f"http://{userinfo}127.0.0.1:{port}", log_path, process)
    finally:
        await stop(process)


async def _start(
    binary: str,
    directory: Path,
    connect_ports: Iterable[int],
    credentials: tuple[str, str] | None,
) -> tuple[int, asyncio.subprocess.Process | None, Path]:
    """tinyproxy on a free port, once it accepts a connection; None when it exited
    first (its port taken meanwhile)."""
    port = free_port()
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 20",
        "Allow 127.0.0.1",
        "MaxClients 20",
        "LogLevel Info",
        "DisableViaHeader Yes",
    ]
    lines += [f"ConnectPort {allowed}" for allowed in connect_ports]
    if credentials is not None:
        lines.append(f"BasicAuth {credentials[0]} {credentials[1]}")
    config = directory / f"tinyproxy-{port}.conf"
    config.write_text("\n".join(lines) + "\n")
    log_path = directory / f"tinyproxy-{port}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary, "-d", "-c", str(config), stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    try:
        async with asyncio.timeout(10):
            while True:  # up once it accepts a connection
                if process.returncode is not None:
                    return port, None, log_path
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                return port, process, log_path
    except BaseException:
        await stop(process)
        raise


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()
