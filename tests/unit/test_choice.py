"""Route choice in time independent of the pool: `choose` over tables of health.

Small tiers are `plan()` itself; large ones are sampled (two choices) or walked down a
rendezvous tree (affinity). These tests check what each promises: the weighted spread,
health first, priorities, exclusions, stable affinity that moves only an unavailable
route's conversations, and that a choice looks at few routes however many there are.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest

from router.outcomes import BlockReason
from router.rules.choice import SMALL, choose, layout
from router.rules.plan import HEALTHY, RouteHealth, plan
from router.types import Key, ModelSpec, Route

COOLING = RouteHealth(blocked_for=5, block_reason=BlockReason.COOLDOWN)


def route(name: str, *, priority: int = 1, weight: float = 1.0) -> Route:
    key = Key(name=name, provider="openai", api_base="http://127.0.0.1:1/v1", api_key="sk-x")
    return Route(key=key, model="m", priority=priority, weight=weight)


def pool(
    count: int, *, priority: int = 1, prefix: str = "k", weight: float = 1.0
) -> tuple[Route, ...]:
    return tuple(route(f"{prefix}{i}", priority=priority, weight=weight) for i in range(count))


def model_of(routes: tuple[Route, ...]) -> ModelSpec:
    return ModelSpec(name="m", routes=routes, chain=("m",))


class Counted(Mapping[str, RouteHealth]):
    """A health table that counts the routes asked about."""

    def __init__(self, table: dict[str, RouteHealth] | None = None) -> None:
        self.table = table or {}
        self.asked: set[str] = set()

    def __getitem__(self, route_id: str) -> RouteHealth:
        self.asked.add(route_id)
        return self.table.get(route_id, HEALTHY)

    def get(self, route_id: str, default: object = None) -> RouteHealth:  # type: ignore[override]
        return self[route_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def pick(routes: tuple[Route, ...], health: Mapping[str, RouteHealth] | None = None,
         seed: int = 0, **kw: object) -> Route | None:  # fmt: skip
    return choose(model_of(routes), layout(routes), health or {}, random.Random(seed), **kw)[0]  # type: ignore[arg-type]


def test_a_small_tier_is_chosen_exactly_as_plan_orders_it():
    routes = (*pool(SMALL), *pool(3, priority=2, prefix="s"))
    model = model_of(routes)
    table = {routes[0].id: COOLING, routes[2].id: RouteHealth(in_flight=3, error_rate=0.5)}
    for seed in range(200):
        expected = plan(model, table, random.Random(seed)).routes[0]
        assert choose(model, layout(routes), table, random.Random(seed))[0] is expected


def test_a_large_healthy_tier_spreads_by_weight():
    routes = (*pool(40), *pool(10, prefix="h", weight=3.0))
    rng = random.Random(1)
    shape, model = layout(routes), model_of(routes)
    counts = Counter(choose(model, shape, {}, rng)[0].key.name[0] for _ in range(20000))
    # Weights 40 x 1 and 10 x 3: the heavy keys take 30 / 70 of the requests.
    assert counts["h"] / 20000 == pytest.approx(30 / 70, abs=0.02)


def test_a_choice_looks_at_a_few_routes_however_large_the_pool():
    for count in (100, 1000):
        routes = pool(count)
        health = Counted()
        assert pick(routes, health) is not None
        assert len(health.asked) <= 2
        health = Counted()
        assert pick(routes, health, affinity=b"conversation") is not None
        assert len(health.asked) <= 8  # one leaf group of the tree at most


def test_an_unhealthy_route_loses_its_comparisons():
    routes = pool(20)
    sick = {routes[0].id: RouteHealth(error_rate=1.0, in_flight=4)}
    rng = random.Random(2)
    shape, model = layout(routes), model_of(routes)
    counts = Counter(choose(model, shape, sick, rng)[0].id for _ in range(20000))
    # Its fair share is 1/20 = 1000; drawn about 2000 times, it wins few.
    assert counts[routes[0].id] < 400
    assert counts[routes[1].id] > 800


def test_a_blocked_route_is_never_chosen_and_a_mostly_blocked_tier_still_serves():
    routes = pool(50)
    table = {r.id: COOLING for r in routes[1:]}
    for seed in range(50):
        assert pick(routes, table, seed) is routes[0]
        assert pick(routes, table, seed, affinity=b"c%d" % seed) is routes[0]


def test_a_large_tier_entirely_down_goes_to_the_next_tier():
    routes = (*pool(30), *pool(20, priority=2, prefix="s"))
    table = {r.id: COOLING for r in routes[:30]}
    for seed in range(50):
        chosen = pick(routes, table, seed, affinity=b"c%d" % seed if seed % 2 else b"")
        assert chosen is not None and chosen.priority == 2


def test_the_routes_passed_over_are_reported_with_their_reasons():
    small = pool(3)
    _, passed = choose(model_of(small), layout(small), {small[0].id: COOLING}, random.Random(0))
    assert [(u.route, u.reason) for u in passed] == [(small[0], BlockReason.COOLDOWN)]
    large = pool(40)
    table = {r.id: COOLING for r in large[1:]}
    route, passed = choose(model_of(large), layout(large), table, random.Random(0))
    assert route is large[0]
    assert passed and all(u.reason is BlockReason.COOLDOWN for u in passed)
    assert large[0] not in {u.route for u in passed}


def test_nothing_available_is_none():
    routes = pool(30)
    assert pick(routes, {r.id: COOLING for r in routes}) is None
    assert pick(routes, exclude={r.id for r in routes}) is None


def test_excluded_routes_are_skipped():
    routes = pool(20)
    tried = {r.id for r in routes[:19]}
    for seed in range(20):
        assert pick(routes, seed=seed, exclude=tried) is routes[19]


CONVERSATIONS = [b"conversation-%d" % n for n in range(3000)]


def test_affinity_in_a_large_tier_is_stable_even_and_moves_only_the_lost_share():
    routes = pool(64)
    before = {key: pick(routes, seed=key[-1], affinity=key) for key in CONVERSATIONS}
    # The rng plays no part.
    assert all(pick(routes, seed=7, affinity=key) is before[key] for key in CONVERSATIONS[:200])
    counts = Counter(r.id for r in before.values())
    assert len(counts) == 64 and max(counts.values()) < 3 * 3000 / 64
    lost = routes[5]
    after = {key: pick(routes, {lost.id: COOLING}, affinity=key) for key in CONVERSATIONS}
    for key in CONVERSATIONS:
        if before[key] is lost:
            assert after[key] is not lost
        else:
            assert after[key] is before[key]


def test_affinity_in_a_large_tier_respects_weights():
    routes = (*pool(24), *pool(8, prefix="h", weight=4.0))
    counts = Counter(pick(routes, affinity=key).key.name[0] for key in CONVERSATIONS)
    # 24 x 1 and 8 x 4: the heavy keys hold 32 / 56 of the conversations.
    assert counts["h"] / len(CONVERSATIONS) == pytest.approx(32 / 56, abs=0.04)


def test_a_remembered_conversation_gets_the_answer_a_fresh_walk_gives():
    """A tier remembers each conversation's best group of routes; with routes going
    down and up between turns, the answer is always the one a fresh tree walk gives."""
    routes = pool(64)
    model, shape = model_of(routes), layout(routes)
    rng = random.Random(3)
    for turn in range(6):
        down = {r.id: COOLING for r in rng.sample(routes, 20 * (turn % 3))}
        for key in CONVERSATIONS[:500]:
            kept = choose(model, shape, down, rng, affinity=key)[0]
            fresh = choose(model, layout(routes), down, rng, affinity=key)[0]
            assert kept is fresh
    assert shape.tiers[0].leaves  # the remembered path was taken
