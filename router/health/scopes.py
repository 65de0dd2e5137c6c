"""Where the state store keeps what it knows, by name: a route's and a key's state per
account (types.Key.account: a new credential under the same name starts clean, on
every replica sharing Redis and across a snapshot), a client model's by its name.
"""

from __future__ import annotations

from router.types import Key, Route


def route_scope(route: Route) -> str:
    """The route's state, kept per account (types.Key.account): `route:<id>@<account>`."""
    return f"route:{route.id}@{route.key.account}"


def key_scope(route: Route) -> str:
    return account_scope(route.key)


def account_scope(key: Key) -> str:
    """The key's state (quota, auth, budget blocks): `key:<name>@<account>`."""
    return f"key:{key.name}@{key.account}"


def scope_name(scope: str) -> tuple[str, str]:
    """A scope's kind and the name it is for: ("route", "a/gpt-5.4") for a route's, with
    its account taken off; ("model", "gpt-5.4") for a model's."""
    kind, _, name = scope.partition(":")
    if kind in ("route", "key"):
        name = name.rpartition("@")[0] or name
    return kind, name
