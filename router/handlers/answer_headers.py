"""The headers the router adds to its answers, by name.

A client reads them to learn what happened to its request: its id (the client's own
`x-request-id`, when it sent a usable one), how many attempts it took, the route that
answered, and the cost of a whole answer (a stream's cost is known only at its end,
so the log has it).
"""

from __future__ import annotations

REQUEST_ID = "x-request-id"
ATTEMPTS = "x-router-attempts"
ROUTE = "x-router-route"
COST = "x-router-cost-usd"
COUNTED_BY = "x-router-counted-by"  # /v1/messages/count_tokens: the provider, or an estimate
