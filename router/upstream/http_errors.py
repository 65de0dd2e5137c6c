"""How a request to a provider failed, as the upstream HTTP client reports it; the
upstream layer (`router/upstream/__init__.py`) maps each to the router's own errors."""

from __future__ import annotations


class HttpError(Exception):
    """The connection or the response failed; the subclasses say how."""


class Disconnected(HttpError):
    """The connection closed before a whole response head came back."""


class BrokenBody(HttpError):
    """The connection closed, or the body could not be decoded, part way through."""


class BadResponse(HttpError):
    """What came back is not HTTP/1.1 this client can read."""


class TooLarge(BadResponse):
    """The response passed one of the limits (`router.types.Limits`) on what it may hold."""


__all__ = ["BadResponse", "BrokenBody", "Disconnected", "HttpError", "TooLarge"]
