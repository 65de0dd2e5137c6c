"""`llm-router serve | check | schema | demo` (also `python -m router ...`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any

import structlog

from router.config import format_route_table, load_config
from router.errors import ConfigError
from router.telemetry.log_sink import GATHER_SECONDS, LogSink, over_stderr
from router.telemetry.logs import configure_logging
from router.types import DISTRIBUTION
from router.wire.redact import config_secrets

DEFAULT_CONFIG = os.environ.get("LLM_ROUTER_CONFIG", "routes.yaml")
_DEFAULT_SAID = (
    f"default: $LLM_ROUTER_CONFIG, else routes.yaml; now {DEFAULT_CONFIG}"
    if "LLM_ROUTER_CONFIG" in os.environ
    else "default: routes.yaml, or $LLM_ROUTER_CONFIG when set"
)


class _PrintVersion(argparse.Action):
    """`--version`, looked up only when asked: scanning the installed distributions
    takes a fifth of a second, which every other command should not pay."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _version() -> str:
    """The installed distribution's version, whatever the distribution is named."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for name in [*packages_distributions().get("router", []), DISTRIBUTION]:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-router", description=__doc__)
    parser.add_argument("--version", action=_PrintVersion, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the router")
    serve.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"routes.yaml path ({_DEFAULT_SAID})"
    )
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    _logging_args(serve)

    check = commands.add_parser("check", help="validate a config and print its route table")
    check.add_argument("config", nargs="?", help=f"routes.yaml path ({_DEFAULT_SAID})")

    commands.add_parser(
        "schema", help="print routes.yaml's JSON Schema, for editors (YAML language server)"
    )

    demo = commands.add_parser("demo", help="run on simulated providers; no keys needed")
    demo.add_argument("--port", type=int, default=4000)
    demo.add_argument(
        "--drive",
        type=int,
        default=0,
        metavar="N",
        help="send N requests through the router itself, print who served each, and exit",
    )
    _logging_args(demo, default_format="console")
    return parser


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _logging_args(parser: argparse.ArgumentParser, default_format: str = "json") -> None:
    parser.add_argument("--log-format", choices=("json", "console"), default=default_format)
    parser.add_argument("--log-level", default="info", help=", ".join(LOG_LEVELS))


def _log_level(args: argparse.Namespace) -> str:
    level = str(args.log_level).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log-level {args.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


@contextlib.contextmanager
def _log_sink(args: argparse.Namespace) -> Iterator[LogSink | None]:
    """The sink the process's log lines go through (telemetry/log_sink.py): a stderr
    that is slow or gone then never stalls or fails a request. What it holds is written
    at exit, a few seconds at most."""
    # The demo is read by a person, its story on stdout among the log lines: each line
    # at once. A server's lines are gathered (fewer writes).
    gather = 0.0 if args.command == "demo" else GATHER_SECONDS
    sink = over_stderr(json_lines=args.log_format == "json", gather=gather)
    try:
        yield sink
    finally:
        if sink is not None:
            sink.close()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """uvloop when available (measured faster: see README "Performance");
    LLM_ROUTER_UVLOOP=0 selects asyncio's own loop, for comparison or debugging."""
    if os.environ.get("LLM_ROUTER_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            pass
        else:
            uvloop.run(coroutine)
            return
    asyncio.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.config)
        if args.command == "schema":
            from router.config.schema import shipped_schema

            sys.stdout.write(shipped_schema())
            return 0
        if args.command == "serve":
            config = load_config(args.config)
            level = _log_level(args)
            with _log_sink(args) as stream:
                configure_logging(
                    fmt=args.log_format, level=level, secrets=config_secrets(config), stream=stream
                )
                log = structlog.get_logger("router")
                for warning in config.warnings:
                    log.warning("config_warning", detail=warning)
                from router.server import serve

                _run(serve(config, host=args.host, port=args.port, config_path=args.config))
            return 0
        from router.demo import run_demo

        level = _log_level(args)
        with _log_sink(args) as stream:
            configure_logging(fmt=args.log_format, level=level, stream=stream)
            _run(run_demo(port=args.port, drive=args.drive, out=stream))
        return 0
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check(path: str | None) -> int:
    if path is None:
        # Said first, so an error about a file the user did not name is not a puzzle.
        origin = "$LLM_ROUTER_CONFIG" if "LLM_ROUTER_CONFIG" in os.environ else "the default"
        print(f"checking {DEFAULT_CONFIG} ({origin}; pass a path to check another file)")
    config = load_config(path or DEFAULT_CONFIG)
    print(format_route_table(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
