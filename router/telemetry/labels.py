"""The values the router's metrics label their series with, besides the config's own
names (model, key, route, provider): outcomes and states from fixed enums, so that no
client input can create a series."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from router.outcomes import FailureClass
from router.types import Route

UNKNOWN_MODEL = "_unknown"  # the label for requests naming no configured model


class RequestOutcome(StrEnum):
    SERVED = "served"
    SERVED_AFTER_FAILOVER = "served_after_failover"
    SERVED_BY_FALLBACK = "served_by_fallback"
    REJECTED = "rejected"  # 4xx: the request's own fault (ours or the provider's verdict)
    EXHAUSTED = "exhausted"  # 429: every route rate limited
    FAILED = "failed"  # 5xx: routes down, deadline passed, internal error
    CANCELLED = "cancelled"  # the client went away first


class AttemptOutcome(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    AUTH = "auth"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    LOCAL_RESOURCE = "local_resource"
    BAD_REQUEST = "bad_request"


class RouteState(StrEnum):
    AVAILABLE = "available"
    COOLING_DOWN = "cooling_down"  # rate limited: a 429's cooldown or spent headroom
    CIRCUIT_OPEN = "circuit_open"
    HALF_OPEN = "half_open"  # the circuit lets one probe through
    DISABLED = "disabled"  # the key is out (quota, auth) or the route is misconfigured


ATTEMPT_OUTCOME: Mapping[FailureClass, AttemptOutcome] = {
    FailureClass.OK: AttemptOutcome.OK,
    FailureClass.RATE_LIMITED: AttemptOutcome.RATE_LIMITED,
    FailureClass.EXCEEDS_TPM: AttemptOutcome.RATE_LIMITED,
    FailureClass.QUOTA: AttemptOutcome.QUOTA,
    FailureClass.AUTH: AttemptOutcome.AUTH,
    FailureClass.OVERLOADED: AttemptOutcome.SERVER_ERROR,
    FailureClass.SERVER_ERROR: AttemptOutcome.SERVER_ERROR,
    FailureClass.MODEL_NOT_FOUND: AttemptOutcome.SERVER_ERROR,
    FailureClass.REDIRECT: AttemptOutcome.SERVER_ERROR,
    FailureClass.NOT_ON_THIS_KEY: AttemptOutcome.BAD_REQUEST,
    FailureClass.TIMEOUT: AttemptOutcome.TIMEOUT,
    FailureClass.CONNECTION: AttemptOutcome.CONNECTION,
    FailureClass.LOCAL_RESOURCE: AttemptOutcome.LOCAL_RESOURCE,
    FailureClass.CONTEXT_TOO_LONG: AttemptOutcome.BAD_REQUEST,
    FailureClass.CONTENT_POLICY: AttemptOutcome.BAD_REQUEST,
    FailureClass.BAD_REQUEST: AttemptOutcome.BAD_REQUEST,
    FailureClass.UNKNOWN: AttemptOutcome.BAD_REQUEST,
}


def route_labels(route: Route) -> tuple[str, str, str]:
    return route.id, route.key.name, route.key.provider
