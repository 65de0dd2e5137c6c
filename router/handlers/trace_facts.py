"""A finished request's facts for its trace (telemetry/tracing.py), read from its
RequestTrace when the request log line is written. Called only with tracing on."""

from __future__ import annotations

import time

from aiohttp import web

from router.failover.call import Answer
from router.failover.open_stream import OpenStream
from router.handlers import answer_headers
from router.handlers.state import RequestTrace, RouterState
from router.telemetry.tracing import RequestFacts
from router.wire.usage import Usage


def request_facts(
    request: web.Request,
    trace: RequestTrace,
    state: RouterState,
    *,
    status: int,
    outcome: str,
    stream_end: str | None,
    usage: Usage | None,
    cost_usd: float | None,
) -> RequestFacts:
    result = trace.result
    reply = b""
    if isinstance(result, Answer) and result.status == 200:
        reply = result.body
    elif isinstance(result, OpenStream):
        reply = result.first
    return RequestFacts(
        method=request.method,
        path=request.path,
        traceparent=request.headers.get("traceparent"),
        # A client's own x-request-id is a header value: it stays out of the span.
        request_id=None
        if request.headers.get(answer_headers.REQUEST_ID) == trace.request_id
        else trace.request_id,
        started=trace.started,
        ended=time.perf_counter(),
        status=status,
        outcome=outcome,
        model=trace.model,
        served_by=trace.served_by,
        route=trace.route,
        attempts=trace.attempts,
        keys=state.config.keys,
        stream_end=stream_end,
        usage=usage,
        cost_usd=cost_usd,
        waited=trace.waited,
        ttft=trace.ttft,
        reply=reply,
    )
