"""OpenTelemetry traces: spans exported over OTLP/HTTP to a collector inside the test,
which decodes the protobuf payload (opentelemetry-proto, with the exporter package).

Each request is one SERVER span, parent the client's traceparent; each upstream attempt a
CLIENT span under it; the GenAI conventions' attributes and the router's own; never a
prompt, a completion, a header value or a key, in any byte of what is exported. With
tracing off, nothing of opentelemetry is imported.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from router.config import parse_config
from router.front_door import Runner
from router.server import bound_port, start
from router.sim import Fault, SimKey
from tests.configs import preferring_a, route, routes_yaml, sim_keys
from tests.conftest import HI, REPO, SIM_A, SIM_B, SIM_C, client
from tests.integration.router_process import router_process

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

PROMPT = "tell me about the purple-elephant-7731"
ASKED = [{"role": "user", "content": PROMPT}]
CLIENT_KEY = "router-client-key-5521"
HEADER_VALUE = "header-value-8812"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # Span.SpanKind in the OTLP protobuf
ERROR = 2  # Status.StatusCode


@dataclass
class Collector:
    """Every payload POSTed to /v1/traces, as sent and decoded."""

    url: str = ""
    payloads: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def spans(self) -> list[dict[str, Any]]:
        found = []
        for payload in self.payloads:
            request = ExportTraceServiceRequest.FromString(payload)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            {
                                "name": span.name,
                                "kind": span.kind,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "status": span.status.code,
                                "attributes": _attributes(span.attributes),
                                "resource": resource,
                            }
                        )
        return found


def _attributes(pairs: Any) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind)
    return values


@asynccontextmanager
async def collector() -> AsyncIterator[Collector]:
    """An OTLP/HTTP receiver on 127.0.0.1: POST /v1/traces, protobuf body."""
    received = Collector()

    async def export(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        received.payloads.append(await request.read())
        received.arrived.set()
        body = b""  # an empty ExportTraceServiceResponse: everything accepted
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    received.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield received
    finally:
        await runner.cleanup()


def _by_trace(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(span["trace_id"], []).append(span)
    for members in traces.values():
        members.sort(key=lambda s: (s["kind"] != SERVER, s["start"]))
    return traces


def _assert_nothing_secret(payloads: list[bytes]) -> None:
    exported = b"".join(payloads)
    for secret in (SIM_A.api_key, SIM_B.api_key, SIM_C.api_key, CLIENT_KEY, HEADER_VALUE):
        assert secret.encode() not in exported
    for text in ("purple-elephant", "Hello from", " via gpt-4o."):  # prompt, completions
        assert text.encode() not in exported


async def test_spans_for_a_request_a_stream_and_a_failover(sim_and_keys, monkeypatch) -> None:
    sim, sim_url = sim_and_keys
    monkeypatch.setenv("OTEL_SERVICE_NAME", "router-under-test")
    async with collector() as received:
        yaml_text = preferring_a(
            sim_url,
            server={"client_keys": [CLIENT_KEY]},
            telemetry={"traces": {"endpoint": received.url}},
        )
        runner = await _start(yaml_text)
        try:
            sdk = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{bound_port(runner)}/v1",
                api_key=CLIENT_KEY,
                max_retries=0,
                timeout=20,
            )
            messages = ASKED
            headers = {
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                "x-request-id": "client-chosen-id-42",
                "x-custom": HEADER_VALUE,
            }
            await sdk.chat.completions.create(
                model="gpt-4o", messages=messages, extra_headers=headers
            )
            stream = await sdk.chat.completions.create(
                model="gpt-4o", messages=messages, stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert chunks
            sim.inject("a", Fault.rate_limit(retry_after=30))
            raw = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=messages
            )
            assert raw.headers["x-router-attempts"] == "2"
        finally:
            await runner.cleanup()  # flushes: no waiting for the batch's schedule
        assert received.payloads, "nothing was exported at shutdown"

    spans = received.spans()
    _assert_nothing_secret(received.payloads)
    assert {s["resource"]["service.name"] for s in spans} == {"router-under-test"}
    traces = _by_trace(spans)
    assert len(traces) == 3
    plain = traces.pop(TRACE_ID)  # the client's trace: its traceparent is the parent
    (stream_trace,) = [t for t in traces.values() if len(t) == 2]
    (failover,) = [t for t in traces.values() if len(t) == 3]

    request, attempt = plain
    assert request["parent"] == PARENT_ID
    assert (request["kind"], attempt["kind"]) == (SERVER, CLIENT)
    assert attempt["parent"] == request["span_id"]
    assert request["name"] == "chat gpt-4o" and attempt["name"] == "chat gpt-4o"
    assert request["start"] <= attempt["start"] <= attempt["end"] <= request["end"]
    attributes = request["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.response.model"] == "gpt-4o"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["http.response.status_code"] == 200
    assert attributes["llm_router.route"] == "a/gpt-4o"
    assert attributes["llm_router.key"] == "a"
    assert attributes["llm_router.outcome"] == "served"
    assert "llm_router.request_id" not in attributes  # the client's: a header value
    attempted = attempt["attributes"]
    assert attempted["llm_router.failure"] == "ok"
    assert attempted["server.address"] == "127.0.0.1"
    assert attempted["gen_ai.usage.output_tokens"] == attributes["gen_ai.usage.output_tokens"]

    request, attempt = stream_trace
    assert request["parent"] == "" and attempt["parent"] == request["span_id"]
    assert request["attributes"]["llm_router.stream.end"] == "ok"
    assert request["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert "llm_router.ttft_ms" in request["attributes"]
    assert len(request["attributes"]["llm_router.request_id"]) == 32  # the router's own
    assert attempt["end"] == request["end"]  # the upstream call lasts as long as its stream

    request, first, second = failover
    assert [first["parent"], second["parent"]] == [request["span_id"]] * 2
    assert first["end"] <= second["start"]
    assert first["attributes"]["llm_router.failure"] == "rate_limited"
    assert first["attributes"]["error.type"] == "rate_limited"
    assert first["attributes"]["http.response.status_code"] == 429
    assert first["status"] == ERROR
    assert second["attributes"]["llm_router.route"] == "b/gpt-4o"
    assert second["attributes"]["llm_router.failure"] == "ok"
    assert request["attributes"]["llm_router.attempts"] == 2
    assert request["attributes"]["llm_router.outcome"] == "served_after_failover"
    assert request["attributes"]["llm_router.route"] == "b/gpt-4o"
    assert request["status"] != ERROR


async def test_a_fallback_model_and_an_exhausted_request_are_on_their_spans(sim_and_keys):
    sim, sim_url = sim_and_keys
    async with collector() as received:
        yaml_text = routes_yaml(
            keys=sim_keys(sim_url, SIM_A, SIM_C),
            models={
                "gpt-4o": {"routes": [route("a", "gpt-4o")], "fallback": ["gpt-4o-mini"]},
                "gpt-4o-mini": {"routes": [route("c", "gpt-4o-mini")]},
            },
            failover={"max_wait": 0},
            telemetry={"traces": {"endpoint": f"{received.url}/v1/traces"}},
        )
        runner = await _start(yaml_text)
        try:
            sdk = client(f"http://127.0.0.1:{bound_port(runner)}")
            sim.inject("a", Fault.rate_limit(retry_after=30))
            await sdk.chat.completions.create(model="gpt-4o", messages=ASKED)
            sim.inject("c", Fault.rate_limit(retry_after=30))
            with pytest.raises(openai.RateLimitError):
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
        finally:
            await runner.cleanup()
    traces = list(_by_trace(received.spans()).values())
    fallback = next(t for t in traces if t[0]["attributes"]["gen_ai.request.model"] == "gpt-4o")
    request, first, second = fallback
    assert request["attributes"]["llm_router.fallback.model"] == "gpt-4o-mini"
    assert request["attributes"]["gen_ai.response.model"] == "gpt-4o-mini"
    assert request["attributes"]["llm_router.outcome"] == "served_by_fallback"
    assert second["name"] == "chat gpt-4o-mini"
    assert second["attributes"]["llm_router.fallback.model"] == "gpt-4o-mini"
    assert "llm_router.fallback.model" not in first["attributes"]
    exhausted = next(t for t in traces if t[0]["attributes"]["gen_ai.request.model"] != "gpt-4o")
    request, attempt = exhausted
    assert request["attributes"]["http.response.status_code"] == 429
    assert "gen_ai.response.model" not in request["attributes"]
    assert attempt["attributes"]["llm_router.failure"] == "rate_limited"
    _assert_nothing_secret(received.payloads)


ANT = SimKey(name="ant", api_key="sk-ant-sim-key-t-0000007")


async def test_an_anthropic_stream_names_its_provider_and_its_usage(stack):
    sim, _ = await stack.sim(ANT)
    async with collector() as received:
        yaml_text = routes_yaml(
            keys=sim_keys(sim.root, ANT, provider="anthropic"),
            models={"claude": {"routes": [route("ant", "claude-sonnet-4-6")]}},
            telemetry={"traces": {"endpoint": received.url}},
        )
        runner = await _start(yaml_text)
        try:
            claude = anthropic.AsyncAnthropic(
                base_url=f"http://127.0.0.1:{bound_port(runner)}", api_key="client",
                max_retries=0, timeout=20,
            )  # fmt: skip
            async with claude.messages.stream(
                model="claude", max_tokens=64, messages=ASKED
            ) as stream:
                final = await stream.get_final_message()
        finally:
            await runner.cleanup()
    request, attempt = _by_trace(received.spans()).popitem()[1]
    assert request["name"] == "chat claude"
    assert attempt["name"] == "chat claude-sonnet-4-6"
    for span in (request, attempt):
        attributes = span["attributes"]
        assert attributes["gen_ai.provider.name"] == "anthropic"
        assert attributes["gen_ai.response.model"] == "claude-sonnet-4-6"
        assert attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert request["attributes"]["url.path"] == "/v1/messages"
    assert ANT.api_key.encode() not in b"".join(received.payloads)
    assert b"purple-elephant" not in b"".join(received.payloads)


async def test_a_sample_rate_of_0_still_follows_a_sampled_parent(sim_and_keys):
    _, sim_url = sim_and_keys
    async with collector() as received:
        runner = await _start(
            preferring_a(sim_url, telemetry={"traces": {"endpoint": received.url,
                                                        "sample_rate": 0}})
        )  # fmt: skip
        try:
            sdk = client(f"http://127.0.0.1:{bound_port(runner)}")
            for flags in ("00", "01", None):  # not sampled, sampled, no parent
                parent = f"00-{TRACE_ID}-{PARENT_ID}-{flags}"
                headers = {} if flags is None else {"traceparent": parent}
                await sdk.chat.completions.create(
                    model="gpt-4o", messages=HI, extra_headers=headers
                )
        finally:
            await runner.cleanup()
    spans = received.spans()
    assert [span["kind"] for span in spans if span["kind"] == SERVER] == [SERVER]
    assert {span["trace_id"] for span in spans} == {TRACE_ID}


async def _start(yaml_text: str) -> Runner:
    config = parse_config(yaml_text, source="routes.yaml", environ={})
    return await start(config, "127.0.0.1", 0, rng=random.Random(0))


@pytest.fixture
async def sim_and_keys(stack):
    return await stack.sim(SIM_A, SIM_B, SIM_C)


def _config_file(tmp_path: Path, sim_url: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(preferring_a(sim_url))
    return path


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, "PYTHONPATH": str(REPO), **variables}


async def test_the_standard_variables_turn_it_on_and_the_drain_flushes(stack, tmp_path):
    """A router process with OTEL_EXPORTER_OTLP_ENDPOINT and a batch delay longer than
    the test: its spans reach the collector because SIGTERM's drain flushes them."""
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    async with collector() as received:
        env = _env(
            OTEL_EXPORTER_OTLP_ENDPOINT=received.url,
            OTEL_SERVICE_NAME="router-from-env",
            OTEL_BSP_SCHEDULE_DELAY="600000",
        )
        async with router_process(_config_file(tmp_path, sim_url), env) as router:
            sdk = client(router.url)
            await sdk.chat.completions.create(model="gpt-4o", messages=ASKED)
            assert not received.payloads  # held in the batch
            router.signal()
            assert await router.exit_code() == 0
        spans = received.spans()
    assert [(s["kind"], s["name"]) for s in spans] == [(CLIENT, "chat gpt-4o"),
                                                       (SERVER, "chat gpt-4o")]  # fmt: skip
    assert spans[0]["resource"]["service.name"] == "router-from-env"
    assert [e["event"] for e in router.events if e["event"].startswith("tracing")] == ["tracing"]
    _assert_nothing_secret(received.payloads)


async def test_a_collector_that_never_answers_does_not_hold_the_exit(stack, tmp_path):
    """The exporter would wait OTEL_EXPORTER_OTLP_TIMEOUT (here 120 s) on the queued
    span; the router gives the flush SHUTDOWN_SECONDS (5) and exits, well within the
    test's bound."""
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", hang)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        env = _env(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{runner.addresses[0][1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="120",
        )
        async with router_process(_config_file(tmp_path, sim_url), env, seconds=25) as router:
            await client(router.url).chat.completions.create(model="gpt-4o", messages=HI)
            router.signal()
            assert await router.exit_code() == 0
    finally:
        await runner.cleanup()


# Serves one request in-process, then prints every loaded module that is opentelemetry's.
_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    {block}
    import aiohttp
    from router.config import load_config
    from router.server import bound_port, start
    from router.telemetry.logs import configure_logging

    configure_logging()  # JSON lines on stderr

    async def main():
        runner = await start(load_config(sys.argv[1]), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{{bound_port(runner)}}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            body = {{"model": "gpt-4o", "messages": [{{"role": "user", "content": "hi"}}]}}
            async with session.post(url, json=body) as response:
                assert response.status == 200, await response.text()
        await runner.cleanup()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))

    asyncio.run(main())
    """
)


async def _child(config: Path, env: dict[str, str], block: str = "") -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD.format(block=block), str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().strip(), err.decode()


async def test_with_tracing_off_nothing_of_opentelemetry_is_imported(stack, tmp_path):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    loaded, _ = await _child(_config_file(tmp_path, sim_url), _env())
    assert loaded == "[]"


async def test_the_variable_set_without_the_extra_warns_once_and_serves(stack, tmp_path):
    _, sim_url = await stack.sim(SIM_A, SIM_B)
    block = "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed"
    env = _env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    loaded, log = await _child(_config_file(tmp_path, sim_url), env, block)
    assert loaded == "['opentelemetry']"  # only the blocker itself
    warnings = [line for line in log.splitlines() if "tracing_unavailable" in line]
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed" in warnings[0]
    assert "pip install 'llm-keypool-router[otel]'" in warnings[0]
