"""What OpenAI's endpoints share, as the `OpenAIWireFormat` base of their `WireFormat`s.

Chat (`openai/chat.py`), embeddings (`openai/embeddings.py`) and the Responses API
(`openai/responses.py`) take the key as `Authorization: Bearer`, name each response with
`x-request-id`, send the `x-ratelimit-*` family (provider-signals.md §2.1) and the error
bodies of `openai/errors.py` (§2.2, §2.3). Azure (`openai/azure.py`) builds on them too.
"""

from __future__ import annotations

from aiohttp import web

from router.sim.faults import Fault
from router.sim.limits import Admission, LimitState
from router.sim.openai import errors as openai_errors
from router.sim.openai.wire import new_request_id, ratelimit_headers
from router.sim.wire_format import ErrorReply, FormatName, ModelCall, bearer


class OpenAIWireFormat:
    """Bearer keys, `x-request-id`, `x-ratelimit-*` and OpenAI error bodies."""

    name: FormatName

    def presented_key(self, request: web.Request) -> str | None:
        return bearer(request)

    def unknown_key(self, presented: str | None, request_id: str) -> ErrorReply:
        return openai_errors.invalid_api_key(presented)

    def new_request_id(self) -> str:
        return new_request_id()

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": request_id}

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return ratelimit_headers(state)

    def rate_limited(self, admission: Admission, call: ModelCall, request_id: str) -> ErrorReply:
        return openai_errors.rate_limited(admission, call.model)

    def fault_reply(
        self, fault: Fault, call: ModelCall, *, api_key: str, request_id: str, state: LimitState
    ) -> ErrorReply:
        return openai_errors.fault_reply(
            fault, model=call.model, api_key=api_key, request_id=request_id, state=state
        )

    def stream_failure(self, call: ModelCall, request_id: str) -> ErrorReply:
        # The nearest non-streaming equivalent of a failure mid-generation.
        return openai_errors.fault_reply(
            Fault.server_error(500), model=call.model, api_key="", request_id=request_id
        )
