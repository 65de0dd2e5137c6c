"""The router end to end through real sockets: simulated providers, raw upstreams, SDKs."""
