"""Where each stored Responses answer lives: a follow-up turn goes to the same route.

OpenAI's Responses API keeps an answer per account (`store`, the default) and a later
turn names it (`previous_response_id`): on another key, of another organisation, the
provider answers 404 `previous_response_not_found` and the conversation breaks. Affinity
cannot keep such a chain on one key (it hashes the id, which changes every turn), so
each answer's id is remembered with the route that gave it, and a follow-up tries that
route first while it is available. Bounded: the most recent `MAX_HOMES` answers, in
this process (a follow-up that reaches another replica is routed as any request is).
"""

from __future__ import annotations

import re
from collections import OrderedDict

MAX_HOMES = 20_000  # answers remembered, a few MB
_SCAN = 2048  # an answer's id is its first "id": at its start, or in response.created
_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')


class ResponseHomes:
    """Response id -> the route id that answered it, the most recent `limit` of them."""

    __slots__ = ("_homes", "_limit")

    def __init__(self, limit: int = MAX_HOMES) -> None:
        self._homes: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def remember(self, answer: bytes, route_id: str) -> None:
        """Note the id at the start of `answer` (a whole answer, or a stream's first
        events) as served by `route_id`."""
        found = _ID.search(answer, 0, _SCAN)
        if found is None:
            return
        homes = self._homes
        homes[found.group(1).decode("ascii")] = route_id
        homes.move_to_end(found.group(1).decode("ascii"))
        if len(homes) > self._limit:
            homes.popitem(last=False)

    def home(self, response_id: object) -> str:
        """The route that gave the answer `response_id` names; "" when not known."""
        if not isinstance(response_id, str):
            return ""
        return self._homes.get(response_id, "")

    def __len__(self) -> int:
        return len(self._homes)
