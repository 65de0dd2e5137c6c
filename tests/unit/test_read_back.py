"""State read back from outside the process (the shared Redis, a snapshot file) is
taken only when it is a value a router could have written."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest

from router.health import read_back
from router.health.snapshot import SnapshotStore
from router.outcomes import BlockReason, Headroom


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, 1e300, True, "60", None])
def test_a_duration_is_a_number_within_forty_days(value):
    with pytest.raises(ValueError):
        read_back.seconds_left(value)


def test_a_duration_within_forty_days_is_taken():
    assert read_back.seconds_left(40 * 86_400) == 40 * 86_400.0
    assert read_back.seconds_left(0.5) == 0.5


@pytest.mark.parametrize("value", ["nan", "inf", "-1", b"garbage", math.inf, -0.01])
def test_an_amount_is_finite_and_not_negative(value):
    with pytest.raises(ValueError):
        read_back.amount(value)


def test_an_amount_is_read_from_redis_text():
    assert read_back.amount(b"1.25") == 1.25
    assert read_back.amount(0) == 0.0


@pytest.mark.parametrize(
    "fields",
    [
        [1],
        {"remaining_requests": "many"},
        {"remaining_requests": 1.5},
        {"remaining_tokens": -1},
        {"limit_tokens": True},
        {"tokens_reset_in": math.inf},
        {"requests_reset_in": 86_401},
        {"requests_reset_in": -1},
        {"spare": 1},
    ],
)
def test_headroom_with_a_field_no_router_writes_is_refused(fields):
    """A string count raised TypeError where a route's headroom is compared, on the
    request path; an unknown field raised TypeError in Headroom itself."""
    with pytest.raises(ValueError):
        read_back.headroom(fields)


def test_headroom_as_a_router_writes_it_is_taken():
    written = Headroom(remaining_requests=3, limit_requests=10, tokens_reset_in=1.5)
    fields = json.loads(json.dumps(asdict(written)))  # as redis_store.py sends it
    assert read_back.headroom(fields) == written


def _snapshot(path: Path, **entries: list) -> None:
    document = {"version": 1, "saved_at": 1000.0, "blocks": [], "headroom": [], "totals": []}
    path.write_text(json.dumps({**document, **entries}))


async def _loaded(path: Path) -> SnapshotStore:
    store = SnapshotStore(str(path), lambda: 50.0, wall=lambda: 1010.0, every=3600)
    store.start()
    return store


async def test_a_snapshot_with_an_infinite_block_is_not_loaded(tmp_path, capsys):
    """json.loads reads `Infinity`: a hand-edited or damaged file blocked the route for
    ever. The file is reported and the router starts empty, as for any unreadable one."""
    path = tmp_path / "state.json"
    _snapshot(path, blocks=[["route:a", math.inf, "cooldown"], ["route:b", 60, "cooldown"]])
    store = await _loaded(path)
    try:
        assert store.peek("route:a") is None
        assert store.peek("route:b") is None
        assert "state_snapshot_unreadable" in capsys.readouterr().out
    finally:
        await store.close()


async def test_a_snapshot_as_a_router_writes_it_is_loaded(tmp_path):
    path = tmp_path / "state.json"
    room = {"remaining_requests": 0, "requests_reset_in": 20.0}
    _snapshot(
        path,
        blocks=[["route:b", 60, "cooldown"]],
        headroom=[["route:c", room, 60]],
        totals=[["spend:key:k:", 1.5, 600]],
    )
    store = await _loaded(path)
    try:
        state = store.peek("route:b")
        assert state is not None and state.block is not None
        assert state.block.reason is BlockReason.COOLDOWN
        assert state.block.remaining == pytest.approx(50.0)  # 10 s passed since it was saved
        headroom = store.peek("route:c")
        assert headroom is not None and headroom.headroom == Headroom(**room)
        assert await store.add("spend:key:k:", 1.0, 600) == 2.5
    finally:
        await store.close()


async def test_a_block_longer_than_the_longest_kept_is_saved_and_loaded_at_that(tmp_path):
    """`failover.key_disable` has no upper bound: a block of 50 days made the router's
    own snapshot one its next start refused whole (every block and the month's spend
    gone). It is kept as 40 days; a longer one in an older file is read as 40 days."""
    path = tmp_path / "state.json"
    first = SnapshotStore(str(path), lambda: 0.0, wall=lambda: 1000.0, every=3600)
    first.start()
    await first.add("spend:key:a:2026-12", 99.0, 20 * 86_400)
    await first.block("key:b@0123", 50 * 86_400, BlockReason.AUTH)
    await first.close()
    assert json.loads(path.read_text())["blocks"][0][1] == read_back.MAX_STATE_SECONDS
    second = SnapshotStore(str(path), lambda: 0.0, wall=lambda: 1000.0, every=3600)
    second.start()
    try:
        assert second.peek("key:b@0123") is not None
        assert await second.add("spend:key:a:2026-12", 1.0, 60) == 100.0
    finally:
        await second.close()
    _snapshot(path, blocks=[["key:c@0123", 60 * 86_400, "auth"]])
    older = await _loaded(path)
    try:
        state = older.peek("key:c@0123")
        assert state is not None and state.block is not None
        assert state.block.remaining == pytest.approx(read_back.MAX_STATE_SECONDS - 10)
    finally:
        await older.close()
