"""What an attempt sends to a route, and the secrets to look for in what comes back.

The client's body goes byte for byte unless the route's upstream model name differs or
the router asks for usage; the client's headers go less those the key sets itself, then
the key's own and the provider's auth.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.failover.call import Call
from router.types import Key, Route
from router.upstream.providers import Provider
from router.wire.body import with_model, with_usage_requested
from router.wire.dialects import Dialect
from router.wire.redact import StreamRedaction, stream_redaction


def headers_for(call: Call, key: Key, provider: Provider) -> dict[str, str]:
    """The headers of a passthrough request to `key`'s provider."""
    return {
        **(call.headers if not key.headers else _without(call.headers, key.headers)),
        **key.headers,  # routes.yaml's; never an auth or framing header (config refuses)
        **provider.auth_headers(key, call.headers),
        "Content-Type": "application/json",
    }


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


def _without(client: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """The client's headers less those the key sets itself (names ignore case)."""
    names = {name.lower() for name in own}
    return {name: value for name, value in client.items() if name.lower() not in names}
