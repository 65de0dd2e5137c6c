"""A certificate authority of the test's own, for TLS servers on 127.0.0.1."""

from __future__ import annotations

import ssl

import trustme


def tls_contexts(name: str) -> tuple[ssl.SSLContext, ssl.SSLContext, trustme.CA]:
    """(a server's context with a certificate for `name`, a client's that trusts it,
    the authority: its `cert_pem` for a bundle file)."""
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client, authority
