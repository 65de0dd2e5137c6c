"""Middlewares: request context and error mapping (outermost), then client auth."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from router.errors import (
    BodyTooLarge,
    DeadlineExceeded,
    NoCapacity,
    PathNotFound,
    RouterError,
    Unauthorized,
)
from router.handlers.context import REQUEST_TRACE, RequestTrace

log = structlog.get_logger("router.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def error_response(exc: RouterError, trace: RequestTrace) -> web.Response:
    headers = exc.headers()
    attempts = getattr(exc, "attempts", None)
    if isinstance(exc, NoCapacity | DeadlineExceeded) and attempts is not None:
        trace.attempts = list(attempts)
        headers["x-router-attempts"] = str(len(attempts))
    return web.json_response(exc.to_body(), status=exc.status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> RouterError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge("request body is too large")
    return PathNotFound(f"{exc.reason}", status=exc.status)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, one `request` log event, and every error as an OpenAI-style body."""
    client_id = request.headers.get("x-request-id", "")
    request_id = client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else uuid.uuid4().hex
    # A keep-alive connection serves requests one after another in one task: start clean.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    trace = RequestTrace(request_id=request_id, started=time.perf_counter())
    request[REQUEST_TRACE] = trace
    status = 499  # the client went away, unless something below says otherwise
    try:
        try:
            response = await handler(request)
        except RouterError as exc:
            response = error_response(exc, trace)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(_from_http_exception(exc), trace)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("unhandled_error", path=request.path)
            response = web.json_response(
                {
                    "error": {
                        "message": "internal router error; see the router log for "
                        f"request id {request_id}",
                        "type": "server_error",
                        "param": None,
                        "code": "internal_error",
                    }
                },
                status=500,
            )
        if not response.prepared:
            response.headers["x-request-id"] = request_id
        status = response.status
        return response
    finally:
        if trace.model is not None:
            _log_request(trace, status)


def _log_request(trace: RequestTrace, status: int) -> None:
    log.info(
        "request",
        model=trace.model,
        route=trace.route,
        served_by=trace.served_by,
        status=status,
        attempts=[f"{a.route_id}:{a.failure.value}" for a in trace.attempts],
        stream=trace.stream_outcome,
        latency_ms=round((time.perf_counter() - trace.started) * 1000, 2),
    )


def client_auth(client_keys: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Demand one of `client_keys` on /v1/*; with none configured, accept any token."""
    encoded = tuple(key.encode() for key in client_keys)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if encoded and request.path.startswith("/v1/"):
            token = _presented_token(request)
            # Compare against every key in constant time, so timing tells nothing.
            matches = [hmac.compare_digest(token.encode(), key) for key in encoded]
            if not any(matches):
                raise Unauthorized(
                    "missing or invalid router key: send 'Authorization: Bearer <key>' "
                    "with one of server.client_keys"
                )
        return await handler(request)

    return middleware


def _presented_token(request: web.Request) -> str:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key", "")
