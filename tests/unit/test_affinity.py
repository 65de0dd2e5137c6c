"""Conversation affinity: the conversation's key and the rendezvous choice in `plan`."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router.rules.affinity import conversation_key
from router.rules.plan import RouteHealth, plan
from router.types import Key, ModelSpec, Route


def route(name: str, *, priority: int = 1, weight: float = 1.0) -> Route:
    key = Key(name=name, provider="openai", api_base="http://127.0.0.1:1/v1", api_key="sk-x")
    return Route(key=key, model="m", priority=priority, weight=weight)


FOUR = tuple(route(n) for n in "abcd")
SPARE = route("z", priority=2)
MODEL = ModelSpec(name="m", routes=(*FOUR, SPARE), chain=("m",))
CONVERSATIONS = [f"conversation-{n}".encode() for n in range(2000)]
COOLING = RouteHealth(blocked_for=5, block_reason="cooldown")


def first(key: bytes, snapshot: dict[str, RouteHealth] | None = None, seed: int = 0, **kw) -> str:
    model = kw.pop("model", MODEL)
    chosen = plan(model, snapshot or {}, random.Random(seed), affinity=key, **kw).routes
    return chosen[0].key.name


def test_the_same_conversation_gets_the_same_route_whatever_the_rng():
    for key in CONVERSATIONS[:50]:
        assert len({first(key, seed=seed) for seed in range(20)}) == 1


def test_conversations_spread_evenly_over_equal_routes():
    counts = Counter(first(key) for key in CONVERSATIONS)
    assert set(counts) == {"a", "b", "c", "d"}
    for name in "abcd":
        assert counts[name] / len(CONVERSATIONS) == pytest.approx(0.25, abs=0.04)


def test_only_the_conversations_of_an_unavailable_route_move():
    before = {key: first(key) for key in CONVERSATIONS}
    after = {key: first(key, {FOUR[1].id: COOLING}) for key in CONVERSATIONS}
    for key in CONVERSATIONS:
        if before[key] == "b":
            assert after[key] in "acd"  # moved, and stayed in the best tier
        else:
            assert after[key] == before[key]
    moved = Counter(after[key] for key in CONVERSATIONS if before[key] == "b")
    assert min(moved.values()) > 0.2 * sum(moved.values())  # spread, not piled on one
    # When it recovers, they come back.
    assert {key: first(key) for key in CONVERSATIONS} == before


def test_health_comes_first_every_tier_route_down_goes_to_the_next_tier():
    down = {r.id: COOLING for r in FOUR}
    assert {first(key, down) for key in CONVERSATIONS[:50]} == {"z"}


def test_already_tried_routes_are_skipped_and_the_next_best_is_stable():
    for key in CONVERSATIONS[:50]:
        winner = first(key)
        nexts = {first(key, seed=seed, exclude={f"{winner}/m"}) for seed in range(10)}
        assert len(nexts) == 1 and nexts != {winner}


def test_weights_are_respected():
    weighted = (route("a", weight=1), route("b", weight=3))
    model = ModelSpec(name="m", routes=weighted, chain=("m",))
    counts = Counter(first(key, model=model) for key in CONVERSATIONS)
    assert counts["b"] / counts["a"] == pytest.approx(3.0, rel=0.15)


def test_without_a_key_the_choice_stays_random():
    firsts = {first(b"", seed=seed) for seed in range(100)}
    assert firsts == {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"prompt_cache_key": "pc", "user": "u"}, b"i:pc"),
        ({"conversation": {"id": "conv_1"}, "user": "u"}, b"i:conv_1"),
        ({"metadata": {"user_id": "session-9"}, "messages": []}, b"i:session-9"),
        ({"user": "u", "previous_response_id": "resp_1"}, b"i:u"),
        ({"previous_response_id": "resp_1"}, b"i:resp_1"),
    ],
)
def test_the_key_comes_from_what_the_client_names(payload, expected):
    assert conversation_key(payload) == expected


def test_without_a_name_the_start_of_the_conversation_is_the_key():
    system = {"role": "system", "content": "be brief"}
    turn1 = {"messages": [system, {"role": "user", "content": "hi"}]}
    turn2 = {
        "messages": [
            *turn1["messages"],
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ]
    }
    other = {"messages": [system, {"role": "user", "content": "yo"}]}
    assert conversation_key(turn1) == conversation_key(turn2) != conversation_key(other)
    anthropic = {
        "system": [{"type": "text", "text": "sys"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
    }
    assert conversation_key(anthropic) != conversation_key({**anthropic, "system": "other"})
    assert conversation_key({"input": "just text"}) != conversation_key({"input": "other"})
