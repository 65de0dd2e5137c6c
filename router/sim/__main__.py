"""CLI: serve a simulated provider until SIGINT/SIGTERM.

    python -m router.sim --port 0 --key a:sk-sim-a:60:100000 --key b:sk-sim-b
    python -m router.sim --port 9000 --key main:sk-sim-main --model llama-3.3-70b-versatile

Prints exactly one line, `listening on http://HOST:PORT/v1`, once the socket is bound, so
a parent process can read the port when it asked for port 0. The same port also serves
Anthropic (`/v1/messages`), Azure OpenAI (`/openai/deployments/...`) and Gemini
(`/v1beta/models/...`) for the same keys.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from router.sim.provider import SimProvider
from router.sim.state import DEFAULT_MODELS, SimKey


def parse_key(
    spec: str, *, latency: float = 0.0, chunk_delay: float = 0.0, reply: str | None = None
) -> SimKey:
    """`NAME:API_KEY[:RPM[:TPM]]`; an empty or 0 RPM/TPM means unlimited."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"expected NAME:API_KEY[:RPM[:TPM]], got {spec!r}")
    try:
        limits = [int(p) if p else None for p in parts[2:]] + [None, None]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"RPM and TPM must be integers in {spec!r}") from exc
    rpm, tpm = (limit or None for limit in limits[:2])
    return SimKey(
        name=parts[0],
        api_key=parts[1],
        rpm=rpm,
        tpm=tpm,
        latency=latency,
        chunk_delay=chunk_delay,
        reply=reply,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m router.sim",
        description=(
            "Serve a simulated provider: OpenAI (chat, embeddings, responses), Anthropic "
            "Messages, Azure OpenAI and Gemini wire formats on one port, one key table."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="NAME:API_KEY[:RPM[:TPM]]",
        help="a simulated key; repeat for more",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a model it lists at /v1/models besides {', '.join(DEFAULT_MODELS)}; repeat for more",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each head")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument(
        "--reply-words",
        type=int,
        default=0,
        metavar="N",
        help="answer with N words (a stream of N content chunks) instead of one short line",
    )
    return parser


def keys_from(args: argparse.Namespace) -> list[SimKey]:
    reply = " ".join(["word"] * args.reply_words) if args.reply_words > 0 else None
    return [
        parse_key(spec, latency=args.latency, chunk_delay=args.chunk_delay, reply=reply)
        for spec in args.key
    ]


async def serve_until_signalled(provider: SimProvider, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with provider.serve(host=host, port=port) as base_url:
        print(f"listening on {base_url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        keys = keys_from(args)
        provider = SimProvider(keys=keys, models=dict.fromkeys([*DEFAULT_MODELS, *args.model]))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    asyncio.run(serve_until_signalled(provider, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
