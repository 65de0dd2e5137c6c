"""What `llm-router check` prints: the resolved routes, plain text, keys masked."""

from __future__ import annotations

import itertools

from router.types import Budget, Config, ModelSpec, Price, Route, ServerSettings

_TABLE_COLUMNS = (
    "priority", "weight", "key", "provider", "upstream model", "api_base", "api_key",
    "$/Mtok in/out", "context",
)  # fmt: skip


def mask_key(secret: str) -> str:
    """`sk-...abcd`: a recognisable prefix and the last four characters, never the key.

    The prefix (up to the first '-' within 8 characters) is shown only while at least
    half the key stays hidden, so a short key is not printed nearly whole.
    """
    if len(secret) < 12:
        return "***"
    dash = secret.find("-", 0, 8)
    prefix = secret[: dash + 1]
    if len(prefix) + 4 > len(secret) // 2:
        prefix = ""
    return f"{prefix}...{secret[-4:]}"


def format_route_table(config: Config) -> str:
    """What `llm-router check` prints: plain text, keys masked."""
    server = config.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    lines = [
        f"config  {config.source}",
        f"listen  {host}:{server.port}",
        f"auth    {_auth(server)}",
    ]
    rows = {
        name: [_route_row(route) for route in spec.routes] for name, spec in config.models.items()
    }
    every_row = [_TABLE_COLUMNS, *itertools.chain.from_iterable(rows.values())]
    widths = [max(len(cell) for cell in column) for column in zip(*every_row, strict=True)]
    for spec in config.models.values():
        lines += ["", f"model {spec.name}  ({_about(spec)})"]
        if not rows[spec.name]:
            lines.append("  (no usable route)")
            continue
        for row in [_TABLE_COLUMNS, *rows[spec.name]]:
            lines.append("  " + "  ".join(map(str.ljust, row, widths)).rstrip())
    routes = itertools.chain.from_iterable(spec.routes for spec in config.models.values())
    unasked = sorted({route.key.name for route in routes if not route.key.stream_usage})
    if unasked:
        lines += ["", "keys not asked for stream usage (stream_usage: false): their streams "
                  "have no costs or token counts", *(f"  {name}" for name in unasked)]  # fmt: skip
    if config.skipped_keys:
        lines += [
            "",
            "skipped keys",
            *(f"  {key.name}: {key.reason}" for key in config.skipped_keys),
        ]
    if config.warnings:
        lines += ["", "warnings", *(f"  - {warning}" for warning in config.warnings)]
    return "\n".join(lines) + "\n"


def _auth(server: ServerSettings) -> str:
    if server.client_keys:
        count = len(server.client_keys)
        return f"on ({count} client key{'s' if count != 1 else ''})"
    if server.allow_unauthenticated:
        return "off (server.allow_unauthenticated: true)"
    return "off (loopback only)"


def _route_row(route: Route) -> tuple[str, ...]:
    key = route.key
    return (
        str(route.priority),
        f"{route.weight:g}",
        key.name,
        key.provider,
        route.model,
        key.api_base,
        mask_key(key.api_key),
        _price(route.price),
        f"{route.max_input_tokens:,}" if route.max_input_tokens else "?",
    )


def _price(price: Price | None) -> str:
    return f"{price.input * 1e6:g}/{price.output * 1e6:g}" if price else "?"


def _budget(budget: Budget) -> str:
    parts = [f"${budget.usd_per_day:g}/day" if budget.usd_per_day else "",
             f"${budget.usd_per_month:g}/month" if budget.usd_per_month else ""]  # fmt: skip
    return " and ".join(part for part in parts if part)


def _about(spec: ModelSpec) -> str:
    parts = [f"fallback chain: {' -> '.join(spec.chain)}" if spec.fallback else "no fallback"]
    if spec.context_fallback:
        parts.append(f"context fallback: {', '.join(spec.context_fallback)}")
    if spec.budget:
        parts.append(f"budget {_budget(spec.budget)}")
    return "; ".join(parts)
