"""Route choice as a pure function over health snapshots."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router.outcomes import BlockReason, Headroom
from router.rules.plan import HEALTHY, RouteHealth, plan
from router.types import Key, ModelSpec, Route


def key(name: str) -> Key:
    return Key(name=name, provider="openai", api_base="http://127.0.0.1:1/v1", api_key="sk-x")


def route(name: str, *, priority: int = 1, weight: float = 1.0) -> Route:
    return Route(key=key(name), model="m", priority=priority, weight=weight)


A, B, C = route("a"), route("b", weight=2), route("c", priority=2)
MODEL = ModelSpec(name="m", routes=(A, B, C), chain=("m",))


def order(snapshot: dict[str, RouteHealth], seed: int = 0, **kwargs) -> list[str]:
    return [r.key.name for r in plan(MODEL, snapshot, random.Random(seed), **kwargs).routes]


def test_best_priority_tier_comes_before_the_next():
    for seed in range(20):
        assert order({}, seed)[-1] == "c"


def test_weight_spreads_load_inside_a_tier():
    firsts = Counter(order({}, seed)[0] for seed in range(3000))
    assert firsts["b"] / firsts["a"] == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize(
    ("health", "reason", "limited"),
    [
        pytest.param(
            RouteHealth(blocked_for=3, block_reason="cooldown"), "cooldown", True, id="cooling-down"
        ),
        pytest.param(
            RouteHealth(blocked_for=30, block_reason="circuit_open"),
            "circuit_open",
            False,
            id="circuit-open",
        ),
        pytest.param(
            RouteHealth(blocked_for=3600, block_reason="quota"), "quota", False, id="key-disabled"
        ),
        pytest.param(
            RouteHealth(half_open=True, in_flight=1),
            "probing",
            False,
            id="half-open-probe-in-flight",
        ),
        pytest.param(
            RouteHealth(
                headroom=Headroom(remaining_requests=0, requests_reset_in=10), headroom_age=4
            ),
            "headroom",
            True,
            id="no-requests-left-until-reset",
        ),
    ],
)
def test_unavailable_routes_are_skipped_with_their_reason(health, reason, limited):
    result = plan(MODEL, {A.id: health}, random.Random(1))
    assert A not in result.routes
    (blocked,) = result.unavailable
    assert blocked.route == A and blocked.reason == reason and blocked.limited is limited


def test_a_spent_bucket_is_tried_again_once_its_reset_has_passed():
    spent = RouteHealth(
        headroom=Headroom(remaining_requests=0, requests_reset_in=10), headroom_age=10.5
    )
    assert A in plan(MODEL, {A.id: spent}, random.Random(1)).routes


def test_too_few_tokens_left_for_this_request_skips_the_route():
    low = RouteHealth(headroom=Headroom(remaining_tokens=100, tokens_reset_in=5))
    assert A not in plan(MODEL, {A.id: low}, random.Random(1), need_tokens=500).routes
    assert A in plan(MODEL, {A.id: low}, random.Random(1), need_tokens=50).routes


@pytest.mark.parametrize(
    "room",
    [
        pytest.param(
            RouteHealth(
                headroom=Headroom(remaining_tokens=100, limit_tokens=1000, tokens_reset_in=5)
            ),
            id="needs-more-than-the-whole-limit",
        ),
        pytest.param(
            RouteHealth(headroom=Headroom(remaining_tokens=100, limit_tokens=9000)),
            id="reset-unknown",
        ),
        pytest.param(
            RouteHealth(
                headroom=Headroom(remaining_tokens=100, limit_tokens=9000, tokens_reset_in=5),
                headroom_age=5.5,
            ),
            id="reset-passed",
        ),
    ],
)
def test_headroom_blocks_only_when_a_wait_would_cure_it(room):
    # No wait makes 2,000 tokens fit a 1,000-token limit: the provider judges that one.
    assert A in plan(MODEL, {A.id: room}, random.Random(1), need_tokens=2000).routes


@pytest.mark.parametrize(
    "sick",
    [
        pytest.param(RouteHealth(error_rate=0.9), id="recent-errors"),
        pytest.param(RouteHealth(in_flight=6), id="busy"),
        pytest.param(RouteHealth(latency=4.0), id="slow"),
        pytest.param(
            RouteHealth(headroom=Headroom(remaining_requests=2, limit_requests=100)),
            id="little-headroom",
        ),
    ],
)
def test_healthier_route_is_preferred(sick):
    # a and b with equal weight; b is sick in one way, a is healthy (and fast).
    model = ModelSpec(name="m", routes=(A, route("b")), chain=("m",))
    snapshot = {A.id: RouteHealth(latency=0.5), "b/m": sick}
    firsts = Counter(
        plan(model, snapshot, random.Random(seed)).routes[0].key.name for seed in range(2000)
    )
    assert firsts["a"] > 3 * firsts["b"]


def test_excluded_routes_are_neither_planned_nor_reported():
    result = plan(MODEL, {}, random.Random(0), exclude={A.id})
    assert A not in result.routes and not result.unavailable


def test_plan_is_deterministic_for_a_seed():
    snapshot = {A.id: HEALTHY}
    assert order(snapshot, 7) == order(snapshot, 7)


def _open(seconds: float, **kwargs) -> RouteHealth:
    return RouteHealth(
        blocked_for=seconds, block_reason=BlockReason.CIRCUIT_OPEN, opens=1, **kwargs
    )


def test_panic_probes_open_circuits_when_no_route_is_available():
    every_route_open = {A.id: _open(5), B.id: _open(3), C.id: _open(20)}
    assert order(every_route_open) == []  # outside panic an open circuit is skipped
    result = plan(MODEL, every_route_open, random.Random(0), panic=True)
    assert {r.key.name for r in result.routes} == {"a", "b", "c"}
    assert result.routes[-1] == C and not result.unavailable  # tiers still hold


def test_panic_keeps_one_probe_per_route_and_never_lifts_other_blocks():
    snapshot = {
        A.id: _open(5, in_flight=1),  # its probe is under way
        B.id: RouteHealth(blocked_for=3, block_reason=BlockReason.QUOTA),
        C.id: _open(20),
    }
    result = plan(MODEL, snapshot, random.Random(0), panic=True)
    assert result.routes == (C,)
    assert {(u.route.key.name, u.reason) for u in result.unavailable} == {
        ("a", BlockReason.CIRCUIT_OPEN),
        ("b", BlockReason.QUOTA),
    }


def test_panic_changes_nothing_while_a_route_is_available():
    snapshot = {A.id: _open(5), B.id: _open(5)}
    assert order(snapshot, panic=True) == ["c"]
