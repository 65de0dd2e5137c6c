"""The status page: every route and key as `/admin/routes` (JSON) and `/admin` (HTML).

Both are built from one plain dict, `status_model()`, over the same `route_statuses()`
that `/metrics` reads, so the page, the JSON and the gauges never disagree. The page is
rendered on the server with no JavaScript and refreshes itself every 5 seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from router.config import mask_key
from router.handlers.state import APP_STATE
from router.health.status import RouteStatus, disabled_keys, models_out, route_statuses
from router.health.store import Block
from router.outcomes import BlockReason
from router.telemetry.labels import RouteState
from router.types import Config, Key

# `last_failure` is this process's own memory; a block written by another replica (or
# before a restart, with Redis) still names its cause, so fall back on the block reason.
_LAST_ERROR_OF_REASON: Mapping[BlockReason, str] = {
    BlockReason.COOLDOWN: "rate_limited",
    BlockReason.CIRCUIT_OPEN: "server_error/timeout",
    BlockReason.PROBING: "server_error/timeout",
    BlockReason.QUOTA: "quota",
    BlockReason.AUTH: "auth",
    BlockReason.MISCONFIGURED: "misconfigured",
}
_NO_STORE = {"Cache-Control": "no-store"}
# Nothing on the page loads or runs anything: inline CSS only.
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


async def routes_json(request: web.Request) -> web.Response:
    return web.json_response(await _model_for(request), headers=_NO_STORE)


async def status_page(request: web.Request) -> web.Response:
    page = render_page(await _model_for(request))
    return web.Response(text=page, content_type="text/html", headers=_PAGE_HEADERS)


async def _model_for(request: web.Request) -> dict[str, Any]:
    state = request.app[APP_STATE].state
    statuses = await route_statuses(state.health, state.config.all_routes())
    out = await models_out(state.health, state.config)
    return status_model(state.config, statuses, listen=_listen_address(request), models=out)


def status_model(
    config: Config,
    statuses: Sequence[RouteStatus],
    *,
    listen: str,
    models: Mapping[str, Block] | None = None,
) -> dict[str, Any]:
    """Routes, keys, client models out of rotation (`models`: over their budget) and
    skipped keys as plain JSON values; no key appears unmasked."""
    models_of: dict[str, list[str]] = {}
    for model in config.models.values():
        for route in model.routes:
            models_of.setdefault(route.id, []).append(model.name)
    off = disabled_keys(statuses)
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "listen": listen,
        "routes_available": sum(1 for s in statuses if not s.reason),
        "routes_total": len(statuses),
        "routes": [_route_row(s, models_of.get(s.route.id, [])) for s in statuses],
        "keys": [_key_row(key, off.get(key.name)) for key in config.keys.values()],
        "models_disabled": [
            {
                "model": name,
                "reason": block.reason.value,
                "available_in_seconds": round(block.remaining, 3),
            }
            for name, block in sorted((models or {}).items())
        ],
        "skipped_keys": [{"key": s.name, "reason": s.reason} for s in config.skipped_keys],
    }


def _route_row(status: RouteStatus, models: list[str]) -> dict[str, Any]:
    route, health, room = status.route, status.health, status.health.headroom
    available_in = round(status.available_in, 3)
    if status.state is RouteState.CIRCUIT_OPEN:
        circuit = "open"
    else:
        circuit = "half_open" if health.half_open else "closed"
    last_error = health.last_failure or (
        _LAST_ERROR_OF_REASON.get(status.reason) if status.reason is not None else None
    )
    if last_error is None and health.half_open:
        last_error = _LAST_ERROR_OF_REASON[BlockReason.CIRCUIT_OPEN]
    return {
        "route": route.id,
        "key": route.key.name,
        "provider": route.key.provider,
        "upstream_model": route.model,
        "models": models,
        "priority": route.priority,
        "weight": route.weight,
        "state": status.state.value,
        "reason": status.reason or "",
        "available_in_seconds": available_in,
        "cooldown_ends_in": available_in if status.state is RouteState.COOLING_DOWN else None,
        "circuit": circuit,
        "headroom": {
            "remaining_requests": room.remaining_requests if room else None,
            "limit_requests": room.limit_requests if room else None,
            "remaining_tokens": room.remaining_tokens if room else None,
            "limit_tokens": room.limit_tokens if room else None,
        },
        "in_flight": health.in_flight,
        "error_rate": round(health.error_rate, 3),
        "latency_ms": None if health.latency is None else round(health.latency * 1000, 1),
        "consecutive_failures": health.streak,
        "last_error": last_error,
    }


def _key_row(key: Key, disabled_reason: str | None) -> dict[str, Any]:
    return {
        "key": key.name,
        "provider": key.provider,
        "api_base": _without_credentials(key.api_base),
        "api_key_masked": mask_key(key.api_key),
        "state": "disabled" if disabled_reason else "available",
        "disabled_reason": disabled_reason,
    }


def _listen_address(request: web.Request) -> str:
    """The socket this request came in on, which `--host`/`--port` may have changed."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        server = request.app[APP_STATE].state.config.server
        return f"{server.host}:{server.port}"
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _text(value: object) -> str:
    return "&ndash;" if value is None or value == "" else escape(str(value))


def _count(value: int | None) -> str:
    return "&ndash;" if value is None else f"{value:,}"


def _duration(seconds: float) -> str:
    whole = math.ceil(seconds)
    if whole < 120:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 120:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _state_cell(state: str, seconds: float, reason: str | None) -> str:
    cell = f'<span class="badge">{escape(state.replace("_", " "))}</span>'
    if seconds > 0:
        cell += f'<div class="wait">available in {escape(_duration(seconds))}</div>'
    if reason:
        cell += f'<div class="reason">reason: {escape(reason)}</div>'
    return cell


def _headroom_cell(room: Mapping[str, int | None]) -> str:
    parts = [
        f"{label} {_count(room[f'remaining_{kind}'])}/{_count(room[f'limit_{kind}'])}"
        for label, kind in (("req", "requests"), ("tok", "tokens"))
        if room[f"limit_{kind}"] is not None or room[f"remaining_{kind}"] is not None
    ]
    return "<br>".join(parts) or "&ndash;"


def _route_tr(row: Mapping[str, Any]) -> str:
    latency = None if row["latency_ms"] is None else f"{row['latency_ms']:.0f} ms"
    state = _state_cell(row["state"], row["available_in_seconds"], row["reason"])
    cells = [
        f'<td class="name">{_text(row["route"])}</td>',
        f'<td class="models">{"<br>".join(map(_text, row["models"])) or "&ndash;"}</td>',
        f'<td class="num">{_text(row["priority"])} / {row["weight"]:g}</td>',
        f'<td class="state">{state}</td>',
        f"<td>{_text(row['circuit'].replace('_', ' '))}</td>",
        f'<td class="num">{_headroom_cell(row["headroom"])}</td>',
        f'<td class="num">{_text(row["in_flight"])}</td>',
        f'<td class="num">{row["error_rate"]:.0%}</td>',
        f'<td class="num">{_text(latency)}</td>',
        f'<td class="num">{_text(row["consecutive_failures"])}</td>',
        f"<td>{_text(row['last_error'])}</td>",
    ]
    return f'<tr class="route state-{escape(row["state"])}">{"".join(cells)}</tr>'


def _key_tr(row: Mapping[str, Any]) -> str:
    cells = [
        f'<td class="name">{_text(row["key"])}</td>',
        f"<td>{_text(row['provider'])}</td>",
        f"<td>{_text(row['api_base'])}</td>",
        f'<td class="mono">{_text(row["api_key_masked"])}</td>',
        f'<td class="state">{_state_cell(row["state"], 0, row["disabled_reason"])}</td>',
    ]
    return f'<tr class="key state-{escape(row["state"])}">{"".join(cells)}</tr>'


_ROUTE_HEADS = ("Route", "Models", "Prio / weight", "State", "Circuit",
                "Headroom", "In flight", "Errors", "Latency", "Streak", "Last error")  # fmt: skip
_KEY_HEADS = ("Key", "Provider", "API base", "API key", "State")

_CSS = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#59636e;margin:0 0 16px}.meta b{color:#1f2328}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #d1d9e0;vertical-align:top}
th{background:#f6f8fa;font-weight:600;font-size:11px;text-transform:uppercase;color:#59636e}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name,td.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:nowrap}
td.state,td.models{white-space:nowrap}
tr td:first-child{border-left:4px solid transparent}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.wait{font-size:12px;font-weight:600;margin-top:2px}.reason{font-size:12px;color:#59636e}
.state-available .badge{background:#dafbe1;color:#116329}
.state-cooling_down{background:#fff8e1}.state-cooling_down td:first-child{border-left-color:#d4a72c}
.state-cooling_down .badge{background:#f5d36b;color:#4d2d00}.state-cooling_down .wait{color:#7d4e00}
.state-half_open td:first-child{border-left-color:#8250df}
.state-half_open .badge{background:#fbefff;color:#6639ba}
.state-circuit_open{background:#fff0ee}.state-circuit_open td:first-child{border-left-color:#cf222e}
.state-circuit_open .badge{background:#cf222e;color:#fff}.state-circuit_open .wait{color:#a40e26}
.state-disabled{background:#f6f8fa;color:#59636e}
.state-disabled td:first-child{border-left-color:#818b98}
.state-disabled .badge{background:#59636e;color:#fff}
.state-disabled .reason{color:#a40e26;font-weight:600}
footer{margin-top:24px;color:#59636e;font-size:12px}a{color:#0969da}
"""


def render_page(model: Mapping[str, Any]) -> str:
    """The status table as one self-contained HTML document; every value is escaped."""
    routes = "".join(_route_tr(row) for row in model["routes"])
    keys = "".join(_key_tr(row) for row in model["keys"])
    skipped = "".join(
        f'<li><span class="name">{_text(s["key"])}</span>: {_text(s["reason"])}</li>'
        for s in model["skipped_keys"]
    )
    skipped_section = f"<h2>Skipped keys</h2><ul>{skipped}</ul>" if skipped else ""
    out = "".join(
        f'<li><span class="name">{_text(m["model"])}</span>: {_text(m["reason"])}, back in '
        f"{escape(_duration(m['available_in_seconds']))} (its fallbacks serve its requests)</li>"
        for m in model["models_disabled"]
    )
    models_section = f'<h2>Models out of rotation</h2><ul id="models-out">{out}</ul>' if out else ""
    rendered = model["generated_at"].replace("T", " ").replace("Z", " UTC")
    available = f"{model['routes_available']} / {model['routes_total']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llm-router status</title><style>{_CSS}</style></head>
<body><h1>llm-router status</h1>
<p class="meta">Listening on <b>{_text(model["listen"])}</b> · rendered <b>{_text(rendered)}</b>
· <b id="available">{_text(available)}</b> routes available</p>
<h2>Routes</h2>
<table id="routes"><thead><tr>{"".join(f"<th>{h}</th>" for h in _ROUTE_HEADS)}</tr></thead>
<tbody>{routes}</tbody></table>
<h2>Keys</h2>
<table id="keys"><thead><tr>{"".join(f"<th>{h}</th>" for h in _KEY_HEADS)}</tr></thead>
<tbody>{keys}</tbody></table>
{models_section}
{skipped_section}
<footer>Refreshes every 5 s · <a href="/metrics">/metrics</a> ·
<a href="/admin/routes">/admin/routes</a> (JSON)</footer>
</body></html>
"""


def _without_credentials(url: str) -> str:
    """Scheme, host and path only: user info or a query string may carry a key."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
