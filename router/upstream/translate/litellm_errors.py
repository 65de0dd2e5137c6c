"""litellm's exceptions, turned back into what the provider said or the router's errors.

litellm re-raises a provider's HTTP error as its own class with a made-up response (a
mock URL, no headers, no body) and folds statuses together: Anthropic's 529 becomes a
500, a refused connection an InternalServerError. The classifier needs the real signal
(provider-signals.md §4, §5, §11.1), and litellm keeps it down the exception chain
(`original_exception`, `__cause__`, `__context__`), which is walked here:

1. an `httpx.HTTPStatusError` whose response is the provider's own (status, headers and
   body as sent: Anthropic `retry-after` + `rate_limit_error`, 529 `overloaded_error`,
   Gemini `RESOURCE_EXHAUSTED` with `RetryInfo`/`QuotaFailure`) -> that answer, as is;
2. a timeout anywhere -> `UpstreamTimeout` (checked before connection errors: litellm's
   aiohttp transport raises ServerTimeoutError, which is both);
3. a body cut short -> `UpstreamProtocolError`; a transport failure -> `UpstreamConnectionError`;
4. otherwise an OpenAI-style error body synthesised from litellm's class, status and
   message, with the provider's headers when litellm kept them (`ContextWindowExceededError`
   -> 400 `context_length_exceeded`, `RateLimitError` -> 429 `rate_limit_exceeded`, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp

from router.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from router.upstream.translate.litellm_internals import base_llm_exception
from router.upstream.translate.translated import TranslatedAnswer, carried_headers, json_bytes
from router.wire.redact import clip

_JSON = "application/json"
_CHAIN_LIMIT = 12

# (litellm class name, OpenAI error type, OpenAI error code), most specific first.
_SYNTHESISED = (
    ("ContextWindowExceededError", "invalid_request_error", "context_length_exceeded"),
    ("ContentPolicyViolationError", "invalid_request_error", "content_policy_violation"),
    ("PaymentRequiredError", "insufficient_quota", "insufficient_quota"),
    ("RateLimitError", "rate_limit_error", "rate_limit_exceeded"),
    ("AuthenticationError", "authentication_error", "invalid_api_key"),
    ("PermissionDeniedError", "permission_error", None),
    ("NotFoundError", "invalid_request_error", "model_not_found"),
    ("BadRequestError", "invalid_request_error", None),
    ("UnprocessableEntityError", "invalid_request_error", None),
    ("ServiceUnavailableError", "service_unavailable", None),
    ("InternalServerError", "server_error", None),
)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: litellm's `original_exception`, then `__cause__`/`__context__`."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(link))
        yield link
        original = getattr(link, "original_exception", None)
        if not isinstance(original, BaseException):
            original = None
        link = original or link.__cause__ or link.__context__


def error_answer(exc: BaseException, route_id: str, *, secret: str = "") -> TranslatedAnswer:
    """The provider's error for a call that failed before any stream chunk; `secret`,
    the route's key, is redacted from any message before it is cut short.

    Raises the router's `UpstreamError` instead when no HTTP answer came (transport).
    """
    import httpx  # loaded with litellm; not worth importing before it is needed

    links = list(exception_chain(exc))
    for link in links:
        if isinstance(link, httpx.HTTPStatusError):
            answer = _provider_answer(link.response, route_id)
            if answer is not None:
                return answer
    failure = _transport_failure(links, route_id, "first_byte", secret)
    if failure is not None:
        raise failure from exc
    return _synthesised(links, route_id, secret)


def stream_failure(route_id: str, exc: BaseException, phase: str, *, secret: str) -> UpstreamError:
    """A stream that broke after its first chunk: the relay ends it with an error event."""
    links = list(exception_chain(exc))
    if any(_is_timeout(link) for link in links):
        return UpstreamTimeout(route_id, phase)
    return UpstreamProtocolError(route_id, f"stream broke: {_provider_message(links, secret)}")


def _provider_answer(response: Any, route_id: str) -> TranslatedAnswer | None:
    try:
        body = response.content
    except Exception:  # httpx.ResponseNotRead: litellm did not keep the body
        return None
    if not isinstance(body, bytes):
        return None
    content_type = response.headers.get("content-type", _JSON)
    return TranslatedAnswer(
        route_id, response.status_code, carried_headers(response.headers, content_type), body
    )


def _is_timeout(exc: BaseException) -> bool:
    import httpx
    from litellm import exceptions

    return isinstance(exc, TimeoutError | httpx.TimeoutException | exceptions.Timeout)


def _transport_failure(
    links: list[BaseException], route_id: str, phase: str, secret: str
) -> UpstreamError | None:
    import httpx

    if any(_is_timeout(link) for link in links):
        return UpstreamTimeout(route_id, phase)
    root = links[-1]
    if any(
        isinstance(link, aiohttp.ClientPayloadError | httpx.RemoteProtocolError) for link in links
    ):
        return UpstreamProtocolError(route_id, clip(f"broken response body: {root}", 300, secret))
    # Read from the chain's network errors, not from litellm's class: litellm raises
    # APIConnectionError for its own failures too (a body it could not convert), and
    # reports a refused connection to Anthropic as InternalServerError(500).
    if any(
        isinstance(link, httpx.TransportError | aiohttp.ClientError | OSError) for link in links
    ):
        message = clip(f"{type(root).__name__}: {root}", 300, secret)
        return UpstreamConnectionError(route_id, message)
    return None


def _synthesised(links: list[BaseException], route_id: str, secret: str) -> TranslatedAnswer:
    """An OpenAI-style error with the meaning litellm gave the failure, when the
    provider's own response is gone (a mid-stream error event, a litellm-side check)."""
    from litellm import exceptions

    # MidStreamFallbackError only says "this happened in a stream"; what it wraps says what.
    wrapper = exceptions.MidStreamFallbackError
    outer = next((x for x in links if not isinstance(x, wrapper)), links[0])
    provider = next((x for x in links if isinstance(x, base_llm_exception())), None)
    status = _http_status(provider) or _http_status(outer) or 500
    headers: Mapping[str, str] = (
        getattr(provider, "headers", None) or getattr(outer, "litellm_response_headers", None) or {}
    )
    body = _raw_error_body(getattr(provider, "message", None))
    if body is None:
        kind, code = next(
            ((kind, code) for name, kind, code in _SYNTHESISED if _is(outer, name)),
            ("api_error", None),
        )
        # litellm appends a traceback and a bug-report link to its own failures.
        message = str(getattr(outer, "message", None) or outer).split("\nTraceback")[0]
        message = clip(message, 500, secret)
        error = {"message": message, "type": kind, "param": None, "code": code}
        body = json_bytes({"error": error})
    return TranslatedAnswer(route_id, status, carried_headers(headers, _JSON), body)


def _provider_message(links: list[BaseException], secret: str) -> str:
    provider = next((x for x in links if isinstance(x, base_llm_exception())), None)
    message = (
        provider.message if provider is not None else f"{type(links[-1]).__name__}: {links[-1]}"
    )
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return clip(str(message), 300, secret)


def _is(exc: BaseException, class_name: str) -> bool:
    from litellm import exceptions

    cls = getattr(exceptions, class_name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _http_status(exc: BaseException | None) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 400 <= status <= 599 else None


def _raw_error_body(raw: object) -> bytes | None:
    """The provider's error JSON when litellm kept its text as the message."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    if isinstance(parsed, list) and parsed:  # Vertex wraps its error in an array (§5.1)
        parsed = parsed[0]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return text.encode()
    return None
