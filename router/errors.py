"""The router's closed set of errors.

    RouterError                      status, OpenAI-style type and code
    ├── ConfigError                  routes.yaml is unusable (never an HTTP answer)
    ├── CallerError                  the client's request is at fault (4xx)
    │   ├── InvalidRequest           400: malformed JSON, non-object body, missing model,
    │   │                            a body that cannot be read (bad gzip or chunking)
    │   ├── Unauthorized             401: client key missing or wrong
    │   ├── Forbidden                403: a Host or Origin the router does not answer
    │   ├── UnknownModel             404: model not in routes.yaml
    │   ├── PathNotFound             404/405: no such endpoint
    │   └── BodyTooLarge             413: over server.max_body_bytes
    ├── UpstreamError                one attempt failed before a usable response
    │   ├── UpstreamTimeout          connect / first_byte / idle / stream deadline passed
    │   ├── UpstreamConnectionError  refused, reset, DNS, TLS
    │   ├── UpstreamProtocolError    the stream broke or ended without its terminator
    │   └── LocalResourceError       the router's own limit (EMFILE, ENOBUFS, ...) stopped it
    ├── NoCapacity                   every route of the chain is unavailable or failed:
    │                                429 + Retry-After when limited, 503 when down
    ├── InternalError                500: the router's own failure (a bug; logged)
    ├── OutOfLocalResources          503: the router ran out of a resource of its own
    │   └── NoRoomForBody            503: the bodies in flight are at their bound
    └── DeadlineExceeded             504: the per-request deadline passed

Every class maps to one HTTP status and one OpenAI-shaped body in `to_body`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from router.outcomes import Attempt

__all__ = [
    "BodyTooLarge",
    "CallerError",
    "ConfigError",
    "DeadlineExceeded",
    "ExpectationFailed",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "LocalResourceError",
    "NoCapacity",
    "OutOfLocalResources",
    "PathNotFound",
    "RouterError",
    "Unauthorized",
    "UnknownModel",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "one_line",
]


class RouterError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    waited: float = 0.0  # seconds the request was held for capacity (failover.max_wait)
    skipped: tuple[str, ...] = ()  # routes passed over untried, each with why (the log)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_body(self) -> dict[str, object]:
        return {
            "error": {"message": self.message, "type": self.type, "param": None, "code": self.code}
        }

    def headers(self) -> dict[str, str]:
        return {}


class ConfigError(RouterError):
    """`routes.yaml` is unusable. The message names file:line and the field path."""


class CallerError(RouterError):
    status = 400
    type = "invalid_request_error"

    def headers(self) -> dict[str, str]:
        # The SDKs retry 408/409/429/5xx; a caller fault will not go away by retrying.
        return {"x-should-retry": "false"}


class InvalidRequest(CallerError):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Unauthorized(CallerError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        # A browser (the /admin page) then asks for the key; SDKs ignore the header.
        return {**super().headers(), "WWW-Authenticate": 'Basic realm="llm-router"'}


class Forbidden(CallerError):
    status = 403
    type = "permission_error"

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class UnknownModel(CallerError):
    status = 404
    code = "model_not_found"


class PathNotFound(CallerError):
    """404 (no such path) or 405 (not for this method: `allow` lists the methods)."""

    status = 404
    code = "not_found"

    def __init__(self, message: str, status: int = 404, allow: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow
        if status == 405:
            self.code = "method_not_allowed"

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.allow:
            headers["Allow"] = self.allow  # what a 405 must say (RFC 9110 §15.5.6)
        return headers


class BodyTooLarge(CallerError):
    status = 413
    code = "request_too_large"


class HeadersTooLarge(CallerError):
    """A request head over `server.max_header_bytes` (RFC 6585's 431, as Envoy answers)."""

    status = 431
    code = "request_header_too_large"


class ExpectationFailed(CallerError):
    """An `Expect` other than 100-continue (RFC 9110 10.1.1)."""

    status = 417
    code = "expectation_failed"


class UpstreamError(RouterError):
    """One attempt failed before a usable upstream response; failover decides what next."""

    status = 502
    type = "upstream_error"

    def __init__(self, route_id: str, message: str) -> None:
        super().__init__(f"{route_id}: {message}")
        self.route_id = route_id


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, route_id: str, phase: str) -> None:
        super().__init__(route_id, f"{phase} timeout")
        self.phase = phase


class UpstreamConnectionError(UpstreamError):
    code = "upstream_connection_error"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_stream_error"


class LocalResourceError(UpstreamError):
    """The router could not reach the upstream for want of a resource of its own: file
    descriptors (EMFILE, ENFILE), socket buffers (ENOBUFS), ephemeral ports
    (EADDRNOTAVAIL) or memory (ENOMEM). Not the upstream's fault."""

    code = "local_resource"


class InternalError(RouterError):
    """The router failed a request on its own (a bug): the log has the traceback."""

    code = "internal_error"


class OutOfLocalResources(RouterError):
    """The answer to a request stopped by a LocalResourceError: another route would hit
    the same limit, so the walk stops and the router says it is its own shortage."""

    status = 503
    type = "service_unavailable"
    code = "router_out_of_resources"

    def __init__(self, message: str, attempts: Sequence[Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}  # a local shortage often passes as others finish


class NoRoomForBody(OutOfLocalResources):
    """The bodies of the requests in flight would pass server.max_body_bytes_total with
    this one's (handlers/body_room.py): refused before it is read. Not the caller's
    fault, nor an upstream's: the router's own bound, and it passes as others finish."""


class ShuttingDown(RouterError):
    """The router is stopping and `server.drain_timeout` passed before the answer did.
    503: the SDKs retry it, and another replica answers."""

    status = 503
    type = "service_unavailable"
    code = "router_shutting_down"


class NoCapacity(RouterError):
    """Every route of the model and its fallbacks is unavailable or failed.

    `retry_after` set and `limited` true: rate limits will lift by then, so 429 with
    Retry-After. Otherwise routes are down (circuit open, key disabled, errors): 503.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: Sequence[Attempt],
        limited: bool,
        retry_after: float | None,
    ) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)
        self.limited = limited
        self.retry_after = retry_after
        if limited:
            self.status, self.type, self.code = 429, "rate_limit_error", "rate_limit_exceeded"
        else:
            self.status, self.type, self.code = 503, "service_unavailable", "no_available_route"

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {"x-should-retry": "false"}
        seconds = max(1, int(-(-self.retry_after // 1)))  # ceil, at least 1
        headers = {"retry-after": str(seconds), "retry-after-ms": str(int(self.retry_after * 1000))}
        # SDKs honour a wait of up to 60 s (openai v3 refuses to retry past 120 s);
        # beyond that a client retry only burns its own budget (provider-signals §11.3).
        if seconds > 60:
            headers["x-should-retry"] = "false"
        return headers


class DeadlineExceeded(RouterError):
    status = 504
    type = "timeout_error"
    code = "request_deadline_exceeded"

    def __init__(self, message: str, attempts: Sequence[Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


_AIOHTTP_PREFIX = re.compile(r"^\d{3}, message: ")  # how aiohttp's HTTP exceptions print


def one_line(error: BaseException) -> str:
    """An exception's text on one line, without aiohttp's `400, message:` prefix."""
    return _AIOHTTP_PREFIX.sub("", " ".join(str(error).split()))
