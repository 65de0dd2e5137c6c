"""A simulated OpenAI-compatible provider that speaks OpenAI's real wire format.

It imports nothing from the rest of `router`, so a misreading of a provider cannot show up
in both the simulator and the code under test. What it sends is built from
`provider-signals.md` §2 (headers, error bodies), §9.1 (SSE) and §10 (retry hints):

    sim = SimProvider(keys=[SimKey(name="a", api_key="sk-sim-a", rpm=60, tpm=100_000)])
    async with sim.serve() as base_url:          # http://127.0.0.1:PORT/v1
        sim.inject("a", Fault.rate_limit(retry_after=2.0), Fault.server_error(500))
        ...
    sim.stats["a"].requests

Modules: `faults` (the Fault script), `limits` (token buckets), `chat_request` (request
parsing), `openai_wire` (bodies, chunks, headers), `openai_errors` (error replies),
`streams` (SSE writing), `state`, `server` (aiohttp app), `provider` (this facade),
`__main__` (CLI).
"""

from router.sim.faults import Fault
from router.sim.provider import SimProvider
from router.sim.state import KeyStats, RecordedRequest, SimKey

__all__ = ["Fault", "KeyStats", "RecordedRequest", "SimKey", "SimProvider"]
