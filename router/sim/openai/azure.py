"""Azure OpenAI's deployment endpoints as `WireFormat`s (provider-signals.md §3).

`POST /openai/deployments/{deployment}/chat/completions?api-version=...` (and
`/embeddings`) take OpenAI's bodies; the deployment names the model, and replies echo it
as `model`. Differences from OpenAI, each from §3 or the threads cited there:

- the key comes in `api-key` (a Bearer header is not a key here), and a wrong one gets
  Azure's own 401 body;
- without `api-version` Azure answers 404 `{"error":{"code":"404","message":"Resource not
  found"}}` (MicrosoftDocs/azure-docs#114602), not a 400;
- success carries only `x-ratelimit-remaining-{requests,tokens}`;
- throttling is a 429 whose `error.code` is the *string* "429", with the wait in the text
  ("Please retry after N seconds") and in `retry-after` / `retry-after-ms`; exhausted
  quota is the same 429 with 86400 seconds;
- a missing deployment is 404 `DeploymentNotFound`.

Other errors (5xx, 400s, context length) pass through in OpenAI's shape, as Azure relays
them. Streams are OpenAI's SSE (§9.1).
"""

from __future__ import annotations

import dataclasses
import math
import uuid

from aiohttp import web

from router.sim.faults import Fault
from router.sim.limits import Admission, DimensionState, LimitState
from router.sim.openai import errors as openai_errors
from router.sim.openai.chat import OpenAIChat, parse_chat_request
from router.sim.openai.embeddings import OpenAIEmbeddings, parse_embeddings_request
from router.sim.openai.wire import retry_after_headers
from router.sim.wire_format import ErrorReply, FormatName, InvalidRequest, ModelCall, dumps

_QUOTA_RETRY_SECONDS = 86_400
_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)


def azure_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> ErrorReply:
    return ErrorReply(status, dumps({"error": {"code": code, "message": message}}), headers or {})


def ratelimit_headers(state: LimitState) -> dict[str, str]:
    headers: dict[str, str] = {}
    if state.requests is not None:
        headers["x-ratelimit-remaining-requests"] = str(state.requests.remaining)
    if state.tokens is not None:
        headers["x-ratelimit-remaining-tokens"] = str(state.tokens.remaining)
    return headers


def throttled(
    operation: str, api_version: str, dimension: str, wait: float | None, *, headers: bool = True
) -> ErrorReply:
    """The 429 of §3; `wait` None leaves out the hint, `headers` False keeps it text-only."""
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
        f"have exceeded {dimension} rate limit of your current OpenAI S0 pricing tier."
    )
    reply_headers: dict[str, str] = {}
    if wait is not None:
        seconds = max(1, math.ceil(wait - 1e-6))
        message += f" Please retry after {seconds} second{'s' if seconds != 1 else ''}."
        if headers:
            reply_headers = retry_after_headers(wait)
    message += (
        " Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
        "increase the default rate limit."
    )
    return azure_error(429, "429", message, reply_headers)


class _AzureDeployment:
    """Mixed in before an OpenAI wire format: Azure's key, ids, headers and error bodies."""

    operation: str

    def presented_key(self, request: web.Request) -> str | None:
        return request.headers.get("api-key") or None

    def new_request_id(self) -> str:
        return str(uuid.uuid4())

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": request_id, "apim-request-id": request_id}

    def unknown_key(self, presented: str | None, request_id: str) -> ErrorReply:
        return azure_error(401, "401", _ACCESS_DENIED)

    def api_version(self, request: web.Request) -> str:
        version = request.query.get("api-version")
        if not version:
            raise InvalidRequest(azure_error(404, "404", "Resource not found"))
        return version

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return ratelimit_headers(state)

    def rate_limited(self, admission: Admission, call: ModelCall, request_id: str) -> ErrorReply:
        dimension = "call" if admission.dimension == "requests" else "token"
        # A request larger than the whole TPM can never pass: no retry hint.
        wait = None if admission.too_large else admission.wait
        reply = throttled(self.operation, call.api_version or "", dimension, wait)
        return dataclasses.replace(
            reply, headers=ratelimit_headers(admission.state) | reply.headers
        )

    def fault_reply(
        self, fault: Fault, call: ModelCall, *, api_key: str, request_id: str, state: LimitState
    ) -> ErrorReply:
        version = call.api_version or ""
        headers = ratelimit_headers(state)
        match fault.kind:
            case "rate_limit":
                # The token bucket is reported empty; an unlimited key gets OpenAI's
                # nominal TPM so the 429 still carries the header a real one does.
                limit = state.tokens.limit if state.tokens else openai_errors.NOMINAL_TPM
                empty = LimitState(state.requests, DimensionState(limit, 0, 0.0))
                reply = throttled(
                    self.operation, version, "token", fault.retry_after, headers=fault.headers
                )
                return dataclasses.replace(reply, headers=ratelimit_headers(empty) | reply.headers)
            case "insufficient_quota":
                # §3: a deployment with ~0 quota says "retry after 86400 seconds".
                reply = throttled(self.operation, version, "token", _QUOTA_RETRY_SECONDS)
                return dataclasses.replace(reply, headers=headers | reply.headers)
            case "auth":
                return azure_error(401, "401", _ACCESS_DENIED)
            case "model_not_found":
                message = (
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try again."
                )
                return azure_error(404, "DeploymentNotFound", message, headers)
            case _:
                reply = openai_errors.fault_reply(
                    fault, model=call.model, api_key=api_key, request_id=request_id
                )
                return dataclasses.replace(reply, headers=headers | reply.headers)


class AzureChat(_AzureDeployment, OpenAIChat):
    name: FormatName = "azure_chat"
    operation = "ChatCompletions_Create"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        version = self.api_version(request)
        call = parse_chat_request(body, deployment=request.match_info["deployment"])
        return dataclasses.replace(call, api_version=version)


class AzureEmbeddings(_AzureDeployment, OpenAIEmbeddings):
    name: FormatName = "azure_embeddings"
    operation = "Embeddings_Create"

    def parse(self, request: web.Request, body: bytes, request_id: str) -> ModelCall:
        version = self.api_version(request)
        call = parse_embeddings_request(body, deployment=request.match_info["deployment"])
        return dataclasses.replace(call, api_version=version)
