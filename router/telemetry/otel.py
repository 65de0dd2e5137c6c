"""The spans of one request, drawn after the fact and exported over OTLP/HTTP.

Imported only when tracing is on (telemetry/tracing.py): this is the one module that
imports opentelemetry (the `otel` extra).

    SERVER  "{operation} {model}"          the client's request, parent: its traceparent
      CLIENT  "{operation} {upstream model}"   one per upstream attempt, in order

Each span starts and ends when its request or attempt did (a stream's request span, and
the attempt that served it, end with the stream). Attributes: the GenAI semantic
conventions' (gen_ai.operation.name, gen_ai.provider.name and the older gen_ai.system,
gen_ai.request.model, gen_ai.response.model, gen_ai.usage.input_tokens and
output_tokens, error.type, server.address) and the router's own (llm_router.*: route,
key NAME, failure class, fallback model, waited and first-token ms, outcome).
Nothing else from the request or the answer: never a prompt, a completion, a header
value (the client's x-request-id included) or a key.

Spans go to a BatchSpanProcessor (a queue and a background thread; OTEL_BSP_* tune it),
so a request adds only the drawing of its spans; `shutdown()` exports what is queued
within SHUTDOWN_SECONDS when the router stops (after the drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import structlog
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.outcomes import Attempt, FailureClass
from router.telemetry.tracing import RequestFacts
from router.types import Key, Operation, TraceSettings

log = structlog.get_logger("router.tracing")

# Seconds the exporter gets at shutdown to send what is queued.
SHUTDOWN_SECONDS = 5.0
SERVICE = "llm-router"  # service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say

# gen_ai.operation.name per client API. Count tokens has no name in the conventions.
_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "chat",
    "/v1/messages": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/messages/count_tokens": Operation.COUNT_TOKENS.value,
}
# gen_ai.provider.name, and the older gen_ai.system, per routes.yaml provider; a
# provider reached through litellm keeps its own name.
_PROVIDER_NAMES = {"azure": "azure.ai.openai", "gemini": "gcp.gemini"}
_SYSTEMS = {"azure": "az.ai.openai"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
# An answer's own "model" field: a JSON key at any depth, which a quote inside a string
# (escaped) cannot fake; the value is kept only if it looks like a model name.
_MODEL = re.compile(rb'"model"\s*:\s*"([A-Za-z0-9._:/@+-]{1,200})"')
_MODEL_SCAN = 8192  # the field comes first, before any content


class OtelTracing:
    """Tracing on: a TracerProvider of its own (not the global one), batch export."""

    def __init__(self, settings: TraceSettings) -> None:
        resource = Resource.create()
        name = resource.attributes.get(SERVICE_NAME)
        if not isinstance(name, str) or name.startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
        sampler: Sampler | None = None  # None: OTEL_TRACES_SAMPLER, parentbased_always_on
        if settings.sample_rate is not None:
            sampler = ParentBased(TraceIdRatioBased(settings.sample_rate))
        # No atexit hook: shutdown() is awaited after the drain, with a bound.
        self._provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        endpoint = _signal_url(settings.endpoint) if settings.endpoint else None
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._tracer = self._provider.get_tracer("llm-router")
        self._propagator = TraceContextTextMapPropagator()
        self._failed = False  # logged once
        self._addresses: dict[str, tuple[str | None, int | None]] = {}
        # perf_counter() -> Unix nanoseconds, for spans drawn after the fact.
        self._epoch_ns = time.time_ns() - int(time.perf_counter() * 1e9)

    def _ns(self, perf: float) -> int:
        return self._epoch_ns + int(perf * 1e9)

    def record(self, facts: RequestFacts) -> None:
        try:
            self._record(facts)
        except Exception:  # a trace is never worth a request: said, and served on
            if not self._failed:
                self._failed = True
                log.exception("tracing_failed", detail="this request's spans are dropped")

    def _record(self, facts: RequestFacts) -> None:
        parent = None
        if facts.traceparent:
            parent = self._propagator.extract({"traceparent": facts.traceparent})
        operation = _OPERATIONS.get(facts.path, "chat")
        served = _served_attempt(facts)
        response_model = _response_model(facts.reply) if served is not None else None
        attributes = _request_attributes(facts, operation, served, response_model)
        span = self._tracer.start_span(
            f"{operation} {facts.model}" if facts.model else operation,
            context=parent,
            kind=SpanKind.SERVER,
            start_time=self._ns(facts.started),
            attributes=attributes,
        )
        if not span.is_recording():
            return  # sampled out: no attempt spans either
        if "error.type" in attributes:
            span.set_status(Status(StatusCode.ERROR))
        context = trace.set_span_in_context(span)
        for number, attempt in enumerate(facts.attempts, 1):
            self._attempt(facts, attempt, number, operation, context, served, response_model)
        span.end(end_time=self._ns(facts.ended))

    def _attempt(
        self,
        facts: RequestFacts,
        attempt: Attempt,
        number: int,
        operation: str,
        context: object,
        served: Attempt | None,
        response_model: str | None,
    ) -> None:
        key_name, _, upstream_model = attempt.route_id.partition("/")
        key = facts.keys.get(key_name)
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": upstream_model,
            "llm_router.route": attempt.route_id,
            "llm_router.key": key_name,
            "llm_router.attempt": number,
            "llm_router.failure": attempt.failure.value,
            **_provider(key),
        }
        if key is not None:
            host, port = self._address(key)
            if host:
                attributes["server.address"] = host
                if port:
                    attributes["server.port"] = port
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        if attempt.model != facts.model:
            attributes["llm_router.fallback.model"] = attempt.model
        end = attempt.started + attempt.seconds
        if attempt is served:
            attributes["gen_ai.response.model"] = response_model or upstream_model
            _usage(attributes, facts)
            if facts.stream_end is not None:
                end = facts.ended  # the upstream call lasts as long as its stream
        failed = attempt.failure is not FailureClass.OK
        if failed:
            attributes["error.type"] = attempt.failure.value
        span: Span = self._tracer.start_span(
            f"{operation} {upstream_model}",
            context=context,  # type: ignore[arg-type]
            kind=SpanKind.CLIENT,
            start_time=self._ns(attempt.started),
            attributes=attributes,
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=self._ns(end))

    def _address(self, key: Key) -> tuple[str | None, int | None]:
        """server.address and server.port of a key's api_base (no path, no credentials)."""
        found = self._addresses.get(key.api_base)
        if found is None:
            parts = urlsplit(key.api_base)
            try:
                port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
            except ValueError:
                port = None
            found = self._addresses[key.api_base] = (parts.hostname, port)
        return found

    async def shutdown(self) -> None:
        """Export what is queued, in a thread, for at most SHUTDOWN_SECONDS: a collector
        that does not answer does not hold the router's exit (the thread is a daemon)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def flush() -> None:
            try:
                self._provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(_settle, done)

        threading.Thread(target=flush, name="otel-shutdown", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_SECONDS):
                await done


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _signal_url(endpoint: str) -> str:
    """routes.yaml's endpoint is a collector's base, as OTEL_EXPORTER_OTLP_ENDPOINT; a
    URL that already ends in /v1/traces is taken as it is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _request_attributes(
    facts: RequestFacts, operation: str, served: Attempt | None, response_model: str | None
) -> dict[str, str | int | float | bool]:
    attributes: dict[str, str | int | float | bool] = {
        "gen_ai.operation.name": operation,
        "http.request.method": facts.method,
        "http.route": facts.path,
        "url.path": facts.path,
        "http.response.status_code": facts.status,
        "llm_router.outcome": facts.outcome,
        "llm_router.attempts": len(facts.attempts),
    }
    if facts.request_id is not None:
        attributes["llm_router.request_id"] = facts.request_id
    if facts.model is not None:
        attributes["gen_ai.request.model"] = facts.model
    if facts.served_by is not None and facts.served_by != facts.model:
        attributes["llm_router.fallback.model"] = facts.served_by
    if served is not None:
        key_name, _, upstream_model = served.route_id.partition("/")
        attributes["llm_router.route"] = served.route_id
        attributes["llm_router.key"] = key_name
        attributes["gen_ai.response.model"] = response_model or upstream_model
        attributes.update(_provider(facts.keys.get(key_name)))
    _usage(attributes, facts)
    if facts.waited:
        attributes["llm_router.waited_ms"] = round(facts.waited * 1000, 2)
    if facts.ttft is not None:
        attributes["llm_router.ttft_ms"] = round(facts.ttft * 1000, 2)
    if facts.stream_end is not None:
        attributes["llm_router.stream.end"] = facts.stream_end
    if facts.cost_usd is not None:
        attributes["llm_router.cost_usd"] = round(facts.cost_usd, 8)
    if facts.status >= 500:
        attributes["error.type"] = str(facts.status)
    elif facts.stream_end not in (None, "ok", "client_gone"):
        attributes["error.type"] = facts.stream_end  # the 200 went out, the end did not
    return attributes


def _served_attempt(facts: RequestFacts) -> Attempt | None:
    """The attempt whose answer the client got, if an upstream answered."""
    if not facts.attempts or facts.route is None:
        return None
    last = facts.attempts[-1]
    return last if last.route_id == facts.route else None


def _provider(key: Key | None) -> Mapping[str, str]:
    if key is None:
        return {}
    return {
        "gen_ai.provider.name": _PROVIDER_NAMES.get(key.provider, key.provider),
        "gen_ai.system": _SYSTEMS.get(key.provider, key.provider),
    }


def _usage(attributes: dict[str, str | int | float | bool], facts: RequestFacts) -> None:
    if facts.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = facts.usage.input_tokens
        if facts.usage.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = facts.usage.output_tokens


def _response_model(reply: bytes) -> str | None:
    """The answer's "model" (a dated version of the one asked for, often)."""
    found = _MODEL.search(reply, 0, _MODEL_SCAN)
    return found.group(1).decode() if found else None
