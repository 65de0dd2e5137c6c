"""The routes of stored Responses answers (failover/homes.py)."""

from __future__ import annotations

from router.failover.homes import ResponseHomes

CREATED = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    b'"response":{"id":"resp_abc123","object":"response","status":"in_progress"}}\n\n'
)


def test_an_answers_id_is_read_from_its_start_or_its_first_event() -> None:
    homes = ResponseHomes()
    homes.remember(b'{"id": "resp_whole", "object": "response", "output": []}', "a/gpt-4o")
    homes.remember(CREATED, "b/gpt-4o")
    assert homes.home("resp_whole") == "a/gpt-4o"
    assert homes.home("resp_abc123") == "b/gpt-4o"
    assert homes.home("resp_unknown") == "" and homes.home(None) == "" and homes.home(5) == ""


def test_the_most_recent_answers_are_kept_up_to_the_bound() -> None:
    homes = ResponseHomes(limit=3)
    for n in range(5):
        homes.remember(b'{"id":"resp_%d"}' % n, f"r{n}")
    assert len(homes) == 3
    assert [homes.home(f"resp_{n}") for n in range(5)] == ["", "", "r2", "r3", "r4"]
    homes.remember(b'{"no":"id"}', "r9")  # an answer without one: nothing kept
    assert len(homes) == 3
