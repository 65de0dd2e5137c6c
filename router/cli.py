"""`llm-router serve | check | demo` (also `python -m router ...`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from router.config import format_route_table, load_config
from router.errors import ConfigError
from router.telemetry.logs import configure_logging
from router.wire.redact import config_secrets

DEFAULT_CONFIG = os.environ.get("LLM_ROUTER_CONFIG", "routes.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-router", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the router")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="routes.yaml path")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    _logging_args(serve)

    check = commands.add_parser("check", help="validate a config and print its route table")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG)

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
            config = load_config(args.config)
            print(format_route_table(config))
            return 0
        if args.command == "serve":
            config = load_config(args.config)
            level = _log_level(args)
            configure_logging(fmt=args.log_format, level=level, secrets=config_secrets(config))
            log = structlog.get_logger("router")
            for warning in config.warnings:
                log.warning("config_warning", detail=warning)
            from router.server import serve

            _run(serve(config, host=args.host, port=args.port, config_path=args.config))
            return 0
        from router.demo import run_demo

        configure_logging(fmt=args.log_format, level=_log_level(args))
        _run(run_demo(port=args.port, drive=args.drive))
        return 0
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
