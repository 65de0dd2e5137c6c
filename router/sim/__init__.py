"""A simulated LLM provider that speaks several providers' real wire formats on one port.

It imports nothing from the rest of `router` (only the stdlib and aiohttp), so a
misreading of a provider cannot show up in both the simulator and the code under test.
What it sends is built from `provider-signals.md` (headers, error bodies, SSE, retry
hints per provider):

    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a", rpm=60, tpm=100_000)])
    async with sim.serve() as base_url:          # http://127.0.0.1:PORT/v1
        sim.root                                 # http://127.0.0.1:PORT
        sim.inject("a", Fault.rate_limit(retry_after=2.0), Fault.server_error(500))
        ...
    sim.stats["a"].requests, sim.stats["a"].by_format

Wire formats, by path (the key travels where that provider expects it):

- OpenAI chat, embeddings, Responses: `POST /v1/chat/completions`, `/v1/embeddings`,
  `/v1/responses`; `Authorization: Bearer`.
- Anthropic Messages: `POST /v1/messages` and `/v1/messages/count_tokens`; `x-api-key`
  or Bearer.
- Azure OpenAI: `POST /openai/deployments/{d}/chat/completions?api-version=...` and
  `.../embeddings`; `api-key`.
- Gemini (AI Studio): `POST /v1beta/models/{m}:generateContent` and
  `:streamGenerateContent?alt=sse`; `x-goog-api-key` or `?key=`.

Keys, honest limits (token buckets), fault scripts, stats and recorded requests are per
key and shared by every format. Faults are semantic (`Fault.overloaded()`); each format
renders them as its provider does (OpenAI 503, Anthropic 529 `overloaded_error`, Gemini
503 `UNAVAILABLE`).

The engine, shared by every format: `faults` (the Fault script), `limits` (token
buckets), `tokens` (estimates), `wire_format` (the contract each format implements),
`pipeline` (one request, any format), `streams` (SSE writing), `state`, `server` (aiohttp
app, routes), `provider` (this facade), `__main__` (CLI).

One package per provider: `openai/` (`wire`: bodies, chunks and headers; `errors`;
`base`: what the OpenAI-shaped formats share; one module per endpoint: `chat`,
`embeddings`, `responses`, `azure`), `anthropic/` (`wire`, `errors`, `limits`: its
rate-limit headers), `gemini/` (`wire`, `errors`).
"""

from router.sim.faults import Fault
from router.sim.provider import SimProvider
from router.sim.state import KeyStats, RecordedRequest, SimKey

__all__ = ["Fault", "KeyStats", "RecordedRequest", "SimKey", "SimProvider"]
