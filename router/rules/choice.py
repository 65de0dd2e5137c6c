"""The next route to try, in time that does not grow with the pool.

`plan()` orders every route of a model, which costs O(routes) per request: fine for the
handful of keys most models have, not for a pool of a thousand. `choose()` answers the
only question the walk asks, "which route now?", and looks at few routes to answer it:

- A tier of at most `SMALL` routes is ordered exactly as `plan()` does (it is `plan()`
  on that tier), so small pools behave exactly as before.
- A larger tier, without affinity: two draws by configured weight (with replacement:
  alias-free, a binary search over cumulative weights), the unavailable ones skipped
  and redrawn a few times, then one of the two taken with odds in proportion to its
  health (health_weight over weight): the power of two choices (Mitzenmacher, 2001).
  With every route healthy it is exactly the weighted spread; a loaded, failing, slow
  or nearly spent route loses most of its comparisons.
- A larger tier, with affinity: rendezvous hashing over a tree of the tier's routes
  (skeleton-based HRW, Wang & Ravishankar, 2009): at each level the child with the
  highest weighted score for the conversation's key, depth first, the first available
  route at a leaf. Weights multiply down the tree, so a route's share is its weight's;
  the same conversation gets the same route on every replica, and when that route is
  unavailable only its conversations move, to the next-best route of its group.

When the draws find nothing available, the tier is ordered exactly after all (it is
mostly down, and the walk needs the truth). None means no tier has an available route:
the caller asks `plan()` why (and for a panic round), which costs O(routes) only then.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import accumulate
from typing import TypeVar

from router.rules.plan import (
    HEALTHY,
    RouteHealth,
    Unavailable,
    health_weight,
    plan,
    unavailability,
)
from router.types import ModelSpec, Route

SMALL = 8  # tiers up to this size are ordered exactly
FANOUT = 8  # children per node of the affinity tree
_DRAWS = 2  # candidates compared per choice
_MAX_DRAWS = 8  # draws before the tier is ordered exactly
_MAX_REMEMBERED = 8192  # conversations whose best leaf a tier keeps
_MASK = (1 << 64) - 1
_SCALE = 1.0 / 2**64
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Node:
    weight: float
    seed: int
    routes: tuple[Route, ...] = ()  # a leaf's
    seeds: tuple[int, ...] = ()  # a leaf's, one per route
    children: tuple[_Node, ...] = ()  # an inner node's


@dataclass(frozen=True, slots=True)
class Tier:
    priority: int
    routes: tuple[Route, ...]
    cumulative: tuple[float, ...]  # running sum of the routes' weights
    tree: _Node | None  # for affinity; None for a small tier
    # Conversation key -> its best leaf's routes in rendezvous order: the next turns of
    # a conversation skip the hashing (bounded: cleared when full).
    leaves: dict[int, tuple[Route, ...]] = field(default_factory=dict, compare=False)

    def draw(self, rng: random.Random) -> Route:
        index = bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.routes[min(index, len(self.routes) - 1)]


@dataclass(frozen=True, slots=True)
class Layout:
    """A route set's tiers, best first, and what choosing among them needs: fixed per
    config, built once per route set."""

    routes: tuple[Route, ...]
    tiers: tuple[Tier, ...]
    min_window: int | None  # the smallest known context window of the set


def layout(routes: tuple[Route, ...]) -> Layout:
    by_priority: dict[int, list[Route]] = {}
    for route in routes:
        by_priority.setdefault(route.priority, []).append(route)
    tiers = []
    for priority in sorted(by_priority):
        members = tuple(by_priority[priority])
        tree = _tree(members, b"%d" % priority) if len(members) > SMALL else None
        tiers.append(Tier(priority, members, tuple(accumulate(r.weight for r in members)), tree))
    windows = [r.max_input_tokens for r in routes if r.max_input_tokens is not None]
    return Layout(routes, tuple(tiers), min(windows, default=None))


def _tree(routes: tuple[Route, ...], path: bytes) -> _Node:
    """Groups of FANOUT routes in config order, then groups of those, up to one root.
    A node's seed comes from its place in the tree and its first route's id, so a key
    added at the end of the list moves only the conversations the new key takes."""
    nodes = [
        _Node(
            sum(r.weight for r in group),
            _seed(path + b"/l/" + group[0].id.encode()),
            group,
            tuple(_seed(r.id.encode()) for r in group),
        )
        for group in _chunks(routes)
    ]
    level = 0
    while len(nodes) > 1:
        level += 1
        tag = path + b"/%d/" % level
        nodes = [
            _Node(sum(n.weight for n in group), _seed(tag + b"%d" % i), children=group)
            for i, group in enumerate(_chunks(tuple(nodes)))
        ]
    return nodes[0]


def _chunks(items: tuple[_T, ...]) -> list[tuple[_T, ...]]:
    return [items[i : i + FANOUT] for i in range(0, len(items), FANOUT)]


def _seed(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def choose(
    model: ModelSpec,
    shape: Layout,
    health: Mapping[str, RouteHealth],
    rng: random.Random,
    *,
    need_tokens: int = 0,
    exclude: Collection[str] = (),
    affinity: bytes = b"",
) -> tuple[Route | None, tuple[Unavailable, ...]]:
    """The route to try now, in the best tier with an available route, as above, and
    the unavailable routes the choice passed over on the way (for the request log).
    None when no route of `shape` is available: ask `plan()` for every reason."""
    passed: list[Unavailable] = []
    for tier in shape.tiers:
        if len(tier.routes) == 1:  # the usual tier: one key for the model
            route = tier.routes[0]
            if _available(route, health, need_tokens, exclude, passed) is not None:
                return route, tuple(passed)
            continue
        if tier.tree is None:
            planned = plan(
                model, health, rng, need_tokens=need_tokens, exclude=exclude,
                routes=tier.routes, affinity=affinity,
            )  # fmt: skip
            passed += planned.unavailable
            if planned.routes:
                return planned.routes[0], tuple(passed)
            continue
        if affinity:
            route = _remembered(tier, _seed(affinity), health, need_tokens, exclude, passed)
        else:
            route = _two_choices(tier, health, rng, need_tokens, exclude, passed)
        if route is not None:
            return route, tuple(passed)
        if not affinity:  # the draws found nothing: order the tier exactly
            planned = plan(
                model, health, rng, need_tokens=need_tokens, exclude=exclude, routes=tier.routes
            )
            passed += planned.unavailable
            if planned.routes:
                return planned.routes[0], tuple(passed)
    return None, tuple(passed)


def _available(
    route: Route,
    health: Mapping[str, RouteHealth],
    need_tokens: int,
    exclude: Collection[str],
    passed: list[Unavailable],
) -> RouteHealth | None:
    if route.id in exclude:
        return None
    state = health.get(route.id, HEALTHY)
    blocked = unavailability(route, state, need_tokens)
    if blocked is None:
        return state
    passed.append(blocked)
    return None


def _two_choices(
    tier: Tier,
    health: Mapping[str, RouteHealth],
    rng: random.Random,
    need_tokens: int,
    exclude: Collection[str],
    passed: list[Unavailable],
) -> Route | None:
    found: list[tuple[Route, RouteHealth]] = []
    for _ in range(_MAX_DRAWS):
        route = tier.draw(rng)
        state = _available(route, health, need_tokens, exclude, passed)
        if state is not None:
            found.append((route, state))
            if len(found) == _DRAWS:
                break
    if len(found) < 2:
        return found[0][0] if found else None
    (first, one), (second, two) = found
    latencies = [s.latency for s in (one, two) if s.latency]
    fastest = min(latencies) if latencies else None
    odds_first = health_weight(first, one, fastest) / first.weight
    odds_second = health_weight(second, two, fastest) / second.weight
    return first if rng.random() * (odds_first + odds_second) < odds_first else second


def _remembered(
    tier: Tier,
    key: int,
    health: Mapping[str, RouteHealth],
    need_tokens: int,
    exclude: Collection[str],
    passed: list[Unavailable],
) -> Route | None:
    """`_affine` on the tier's tree, with the conversation's best leaf remembered: while
    one of its routes is available the answer is the same, without hashing again."""
    assert tier.tree is not None
    leaf = tier.leaves.get(key)
    if leaf is None:
        node = tier.tree
        while not node.routes:
            node = max(node.children, key=lambda n: _score(key, n.seed, n.weight))
        leaf = tuple(route for route, _ in _ranked(node, key))
        if len(tier.leaves) >= _MAX_REMEMBERED:
            tier.leaves.clear()
        tier.leaves[key] = leaf
    for route in leaf:
        if _available(route, health, need_tokens, exclude, passed) is not None:
            return route
    return _affine(tier.tree, key, health, need_tokens, exclude, passed)


def _ranked(node: _Node, key: int) -> list[tuple[Route, int]]:
    return sorted(
        zip(node.routes, node.seeds, strict=True),
        key=lambda pair: _score(key, pair[1], pair[0].weight),
        reverse=True,
    )


def _affine(
    node: _Node,
    key: int,
    health: Mapping[str, RouteHealth],
    need_tokens: int,
    exclude: Collection[str],
    passed: list[Unavailable],
) -> Route | None:
    """The highest-scoring available route under `node` for `key`, depth first."""
    if node.routes:
        for route, _ in _ranked(node, key):
            if _available(route, health, need_tokens, exclude, passed) is not None:
                return route
        return None
    for child in sorted(node.children, key=lambda n: _score(key, n.seed, n.weight), reverse=True):
        route = _affine(child, key, health, need_tokens, exclude, passed)
        if route is not None:
            return route
    return None


def _score(key: int, seed: int, weight: float) -> float:
    """Weighted rendezvous score of (key, seed): -weight / ln(u), u from a 64-bit mix
    (splitmix64's finaliser), uniform in (0, 1)."""
    x = (key ^ seed) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return -weight / math.log((x + 0.5) * _SCALE)
