"""What an attempt sends to a route, and the secrets to look for in what comes back.

The client's body goes byte for byte unless the route's upstream model name differs or
the router asks for usage; the client's headers go less those the key sets itself, then
the key's own and the provider's auth, each name once.
"""

from __future__ import annotations

from router.failover.call import Call
from router.types import Key, Route
from router.upstream.providers import Provider
from router.wire.body import with_model, with_usage_requested
from router.wire.dialects import Dialect
from router.wire.redact import StreamRedaction, stream_redaction


def headers_for(call: Call, key: Key, provider: Provider) -> dict[str, str]:
    """The headers of a passthrough request to `key`'s provider. Every name is
    lowercase (the client's are, and config lowercases a key's), so what the key sets
    replaces what the client sent, and the provider's auth replaces both: each name
    goes once."""
    sent = {**call.headers, **key.headers} if key.headers else call.headers
    return {**sent, **provider.auth_headers(key, sent), "content-type": "application/json"}


def body_for(call: Call, route: Route, *, ask_usage: bool) -> bytes:
    """The client's bytes untouched when the upstream model name is the same and no
    usage is asked for."""
    body = call.body
    if call.payload.get("model") != route.model:
        body = with_model(body, call.payload, route.model)
    if ask_usage:
        body = with_usage_requested(body, call.payload)
    return body


def key_redaction(route: Route, dialect: Dialect) -> StreamRedaction:
    """What the route's upstream was sent (its key, its key's header secrets), found
    and replaced in what it answers."""
    key = route.key
    return stream_redaction(key.api_key, dialect.error_hint, key.header_secrets)
