"""The simulator's aiohttp app: every wire format on one port, by path, plus `/_sim` control.

- `POST /v1/chat/completions`, `/v1/embeddings`: `openai/chat.py`, `openai/embeddings.py`
- `POST /v1/responses`: `openai/responses.py` (`OpenAIResponses`)
- `POST /v1/messages`: `anthropic/wire.py` (`AnthropicMessages`); `/v1/messages/count_tokens`
  (`AnthropicCountTokens`)
- `POST /openai/deployments/{deployment}/chat/completions`, `.../embeddings`:
  `openai/azure.py`
- `POST /{v1beta,v1}/models/{model}:generateContent`, `:streamGenerateContent`:
  `gemini/wire.py` (`GeminiGenerate`)

Each model path runs the same `pipeline.ModelEndpoint` over the one `SimState`.
"""

from __future__ import annotations

from aiohttp import web

from router.sim.anthropic.wire import AnthropicCountTokens, AnthropicMessages
from router.sim.faults import Fault
from router.sim.gemini.wire import GeminiGenerate
from router.sim.openai import errors as openai_errors
from router.sim.openai.azure import AzureChat, AzureEmbeddings
from router.sim.openai.chat import OpenAIChat
from router.sim.openai.embeddings import OpenAIEmbeddings
from router.sim.openai.responses import OpenAIResponses
from router.sim.openai.wire import models_list, new_request_id
from router.sim.pipeline import JSON, ModelEndpoint, error_response
from router.sim.state import RecordedRequest, SimState
from router.sim.wire_format import WireFormat, bearer

_GEMINI_VERSIONS = ("v1beta", "v1")

# Model endpoints: (path, wire format). Gemini's method rides on the model segment after a
# colon (`models/gemini-2.0-flash:streamGenerateContent`), as in Google's REST API.
_ROUTES: tuple[tuple[str, WireFormat], ...] = (
    ("/v1/chat/completions", OpenAIChat()),
    ("/v1/embeddings", OpenAIEmbeddings()),
    ("/v1/responses", OpenAIResponses()),
    ("/v1/messages", AnthropicMessages()),
    ("/v1/messages/count_tokens", AnthropicCountTokens()),
    ("/openai/deployments/{deployment}/chat/completions", AzureChat()),
    ("/openai/deployments/{deployment}/embeddings", AzureEmbeddings()),
    *(
        (f"/{version}/models/{{model}}:{method}", GeminiGenerate(version, stream=stream))
        for version in _GEMINI_VERSIONS
        for method, stream in (("generateContent", False), ("streamGenerateContent", True))
    ),
)


class SimControl:
    """`/_sim` endpoints, `/v1/models`, and the shutdown flag hung handlers watch."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._shutting_down = False

    def shutting_down(self) -> bool:
        return self._shutting_down

    async def on_shutdown(self, _app: web.Application) -> None:
        # Lets hung and stalled handlers end at once instead of holding up runner cleanup.
        self._shutting_down = True

    async def models(self, request: web.Request) -> web.Response:
        presented = bearer(request)
        key = self._state.by_api_key.get(presented) if presented else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = RecordedRequest(key.name if key else "", request.path, headers, b"")
        self._state.requests.append(recorded)
        id_headers = {"x-request-id": new_request_id()}
        if key is None:
            return error_response(openai_errors.invalid_api_key(presented), id_headers)
        body = models_list(self._state.models)
        return web.Response(body=body, content_type=JSON, headers=id_headers)

    async def post_faults(self, request: web.Request) -> web.Response:
        """`{"key": "a", "faults": [{"kind": "rate_limit", "retry_after": 2}], "times": 1}`"""
        try:
            data = await request.json()
            name = str(data["key"])
            faults = [Fault.from_dict(item) for item in data.get("faults", [])]
            times = int(data.get("times", 1))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return _control_error(400, f"bad fault script: {exc!r}")
        if name not in self._state.keys:
            return _control_error(404, f"no SimKey named {name!r}")
        try:
            self._state.inject(name, faults, times)
        except ValueError as exc:
            return _control_error(400, str(exc))
        return web.json_response({"key": name, "queued": len(self._state.queues[name])})

    async def delete_faults(self, request: web.Request) -> web.Response:
        name = request.query.get("key")
        try:
            self._state.clear(name)
        except KeyError as exc:
            return _control_error(404, str(exc))
        return web.json_response({"cleared": name or "all"})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self._state.stats_dict())


def _control_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# A request body the simulator takes, as a provider does (Anthropic's limit is 32 MB);
# aiohttp's default of 1 MiB answered larger prompts with a 413 no provider sends.
MAX_BODY_BYTES = 32 * 1024 * 1024


def build_app(state: SimState) -> web.Application:
    control = SimControl(state)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.on_shutdown.append(control.on_shutdown)
    for path, wire in _ROUTES:
        app.router.add_post(path, ModelEndpoint(state, wire, control.shutting_down).handle)
    app.router.add_get("/v1/models", control.models)
    app.router.add_post("/_sim/faults", control.post_faults)
    app.router.add_delete("/_sim/faults", control.delete_faults)
    app.router.add_get("/_sim/stats", control.get_stats)
    return app
