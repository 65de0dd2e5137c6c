"""HealthTracker over the in-memory store, with time moved by hand."""

from __future__ import annotations

import dataclasses

import pytest
from structlog.testing import capture_logs

from router.health.memory import MemoryStore
from router.health.tracker import HealthTracker
from router.outcomes import BlockReason, Headroom, Verdict
from router.outcomes import FailureClass as F
from router.rules.plan import HEALTHY
from router.types import Budget, FailoverSettings, Key, Route
from tests.clock import FakeClock

SETTINGS = FailoverSettings(
    cooldown_initial=2,
    cooldown_max=60,
    breaker_failures=3,
    breaker_window=5,
    breaker_open=10,
    breaker_open_max=60,
    key_disable=3600,
)
KEY = Key(name="k", provider="openai", api_base="http://127.0.0.1:1/v1", api_key="sk-x")
R1 = Route(key=KEY, model="m1")
R2 = Route(key=KEY, model="m2")


@pytest.fixture
def tracker(clock: FakeClock) -> HealthTracker:
    return HealthTracker(MemoryStore(clock), SETTINGS, clock)


async def record(tracker: HealthTracker, route: Route, failure: F, **kwargs) -> None:
    prior = (await tracker.snapshot([route]))[route.id]
    await tracker.record(route, Verdict(failure=failure, **kwargs), prior=prior, seconds=0.1)


async def health(tracker: HealthTracker, route: Route):
    return (await tracker.snapshot([route]))[route.id]


async def test_rate_limit_cools_the_route_down_for_the_hinted_time(tracker, clock):
    await record(tracker, R1, F.RATE_LIMITED, retry_after=7)
    assert (await health(tracker, R1)).blocked_for == pytest.approx(7)
    assert (await health(tracker, R2)).blocked_for == 0  # other models of the key unaffected
    clock.advance(7.01)
    assert (await health(tracker, R1)).blocked_for == 0


async def test_rate_limit_without_hint_backs_off_exponentially(tracker, clock):
    waits = []
    for _ in range(4):
        await record(tracker, R1, F.RATE_LIMITED)
        waits.append((await health(tracker, R1)).blocked_for)
        clock.advance(waits[-1] + 0.01)
    assert waits == pytest.approx([2, 4, 8, 16])
    await record(tracker, R1, F.OK)
    await record(tracker, R1, F.RATE_LIMITED)
    assert (await health(tracker, R1)).blocked_for == pytest.approx(2)  # streak was reset


async def test_a_429_that_says_retry_now_backs_off_as_one_without_a_hint(tracker, clock):
    """Retry-After 0 (or a date past) from a 429 that keeps coming: 2, 4, 8 s, not 50 ms
    each time, which had the route tried twenty times a second."""
    waits = []
    for _ in range(3):
        await record(tracker, R1, F.RATE_LIMITED, retry_after=0.0)
        waits.append((await health(tracker, R1)).blocked_for)
        clock.advance(waits[-1] + 0.01)
    assert waits == pytest.approx([2, 4, 8])


@pytest.mark.parametrize("failure", [F.QUOTA, F.AUTH])
async def test_quota_and_auth_take_every_route_of_the_key_out_once(tracker, failure):
    with capture_logs() as logs:
        await record(tracker, R1, failure, message="no money")
        await record(tracker, R1, failure, message="no money")
    for route in (R1, R2):
        state = await health(tracker, route)
        assert state.blocked_for == pytest.approx(3600) and state.block_reason == failure.value
    warnings = [e for e in logs if e["event"] == "key_disabled"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["key"] == "k"


async def test_repeated_failures_open_the_circuit_then_one_probe_decides(tracker, clock):
    with capture_logs() as logs:
        for _ in range(3):
            await record(tracker, R1, F.SERVER_ERROR)
    state = await health(tracker, R1)
    assert state.block_reason == "circuit_open" and state.blocked_for == pytest.approx(10)
    assert [e["event"] for e in logs].count("circuit_opened") == 1

    clock.advance(10.01)
    assert (await health(tracker, R1)).half_open
    await record(tracker, R1, F.TIMEOUT)  # the probe fails: open again, for twice as long
    assert (await health(tracker, R1)).blocked_for == pytest.approx(20)

    clock.advance(20.01)
    with capture_logs() as logs:
        await record(tracker, R1, F.OK)  # the probe succeeds: closed
    state = await health(tracker, R1)
    assert not state.half_open and state.blocked_for == 0 and state.streak == 0
    assert [e["event"] for e in logs] == ["circuit_closed"]
    await record(tracker, R1, F.SERVER_ERROR)  # closed means closed: the count starts over
    assert (await health(tracker, R1)).blocked_for == 0


async def test_the_open_period_grows_only_while_probes_fail_and_is_capped(tracker, clock):
    for _ in range(3):
        await record(tracker, R1, F.CONNECTION)
    periods = []
    for _ in range(6):
        periods.append((await health(tracker, R1)).blocked_for)
        clock.advance(periods[-1] + 0.01)
        await record(tracker, R1, F.CONNECTION)  # the probe fails
    assert periods == pytest.approx([10, 20, 40, 60, 60, 60])  # breaker_open_max 60


async def test_failures_spread_beyond_the_window_never_open_the_circuit(tracker, clock):
    for _ in range(9):
        await record(tracker, R1, F.SERVER_ERROR)
        await record(tracker, R1, F.SERVER_ERROR)
        clock.advance(5.01)  # breaker_window is 5: at most 2 failures in any window
    assert (await health(tracker, R1)).blocked_for == 0


async def test_failures_among_many_successes_keep_the_circuit_closed(tracker):
    for _ in range(4):  # 8 failures, 20 successes in the window: under one half
        await record(tracker, R1, F.SERVER_ERROR)
        await record(tracker, R1, F.OK)
        await record(tracker, R1, F.SERVER_ERROR)
        for _ in range(4):
            await record(tracker, R1, F.OK)
    state = await health(tracker, R1)
    assert state.blocked_for == 0 and state.failures == 8 and state.successes == 20
    more = 0
    while (await health(tracker, R1)).blocked_for == 0:
        await record(tracker, R1, F.SERVER_ERROR)
        more += 1
    assert more == 12  # it opens as failures reach one half of the window's calls


async def test_a_success_outside_any_failure_window_costs_no_store_call(clock):
    class Counting(MemoryStore):
        calls = 0

        async def count(self, *args, **kwargs):
            Counting.calls += 1
            return await super().count(*args, **kwargs)

        async def reset(self, *args, **kwargs):
            Counting.calls += 1
            await super().reset(*args, **kwargs)

    tracker = HealthTracker(Counting(clock), SETTINGS, clock)
    for _ in range(50):
        await record(tracker, R1, F.OK)
    assert Counting.calls == 0


async def test_calls_under_way_when_the_circuit_opened_do_not_lengthen_it(tracker):
    chosen_while_closed = await health(tracker, R1)
    for _ in range(3):
        await record(tracker, R1, F.SERVER_ERROR)
    for _ in range(5):  # late failures of calls chosen before it opened
        await tracker.record(R1, Verdict(failure=F.TIMEOUT), prior=chosen_while_closed, seconds=1)
    state = await health(tracker, R1)
    assert state.blocked_for == pytest.approx(10) and state.opens == 1


async def test_failures_below_the_threshold_keep_the_circuit_closed(tracker):
    await record(tracker, R1, F.CONNECTION)
    await record(tracker, R1, F.SERVER_ERROR)
    state = await health(tracker, R1)
    assert state.blocked_for == 0 and not state.half_open and state.streak == 2
    assert state.error_rate > 0


@pytest.mark.parametrize(
    "failure", [F.BAD_REQUEST, F.CONTEXT_TOO_LONG, F.CONTENT_POLICY, F.EXCEEDS_TPM, F.UNKNOWN]
)
async def test_the_requests_own_faults_leave_the_route_healthy(tracker, failure):
    await record(tracker, R1, failure)
    state = await health(tracker, R1)
    assert state.blocked_for == 0 and state.streak == 0 and state.error_rate == 0


async def test_headroom_is_kept_until_its_reset(tracker, clock):
    room = Headroom(remaining_requests=0, limit_requests=3, requests_reset_in=20)
    await tracker.record(R1, Verdict(failure=F.OK), prior=HEALTHY, seconds=0.1, headroom=room)
    state = await health(tracker, R1)
    assert state.headroom == room
    clock.advance(5)
    assert (await health(tracker, R1)).headroom_age == pytest.approx(5)
    clock.advance(16.5)
    assert (await health(tracker, R1)).headroom is None


async def test_in_flight_counts_are_local(tracker):
    tracker.begin(R1)
    tracker.begin(R1)
    assert (await health(tracker, R1)).in_flight == 2
    tracker.end(R1)
    assert (await health(tracker, R1)).in_flight == 1


async def test_a_hinted_429s_headroom_resets_no_later_than_its_retry_after(tracker, clock):
    # The bucket is full again in 60 s, but the provider said "retry after 20".
    room = Headroom(remaining_requests=0, limit_requests=50, requests_reset_in=60)
    verdict = Verdict(failure=F.RATE_LIMITED, retry_after=20)
    await tracker.record(R1, verdict, prior=HEALTHY, seconds=0.1, headroom=room)
    state = await health(tracker, R1)
    assert state.headroom.remaining_requests == 0  # still reported as it was
    assert state.headroom.requests_reset_in == 20
    clock.advance(20.5)
    assert (await health(tracker, R1)).blocked_for == 0


async def test_the_last_failure_class_is_remembered_per_route(tracker):
    await record(tracker, R1, F.TIMEOUT)
    await record(tracker, R1, F.OK)
    assert (await health(tracker, R1)).last_failure == "timeout"
    assert (await health(tracker, R2)).last_failure == ""


async def test_a_call_let_through_an_open_circuit_closes_it_or_leaves_the_period_alone(
    tracker, clock
):
    # When every route is open the policy lets a call through (panic): its failure does
    # not lengthen the open period, its success closes the circuit and lifts the block.
    for _ in range(3):
        await record(tracker, R1, F.CONNECTION)
    clock.advance(2)
    await record(tracker, R1, F.CONNECTION)
    state = await health(tracker, R1)
    assert state.blocked_for == pytest.approx(8) and state.opens == 1
    await record(tracker, R1, F.OK)
    state = await health(tracker, R1)
    assert state.blocked_for == 0 and state.opens == 0 and not state.half_open


async def test_a_budget_block_applies_only_while_the_key_has_a_budget(tracker):
    """A block for a budget since removed (read back from a shared store by a replica
    started on the new config) no longer keeps the key out; other blocks still do."""
    budgeted = Route(key=dataclasses.replace(KEY, budget=Budget(usd_per_day=1.0)), model="m1")
    await tracker.disable_key(budgeted.key, 600, BlockReason.BUDGET)
    assert (await health(tracker, budgeted)).blocked_for == pytest.approx(600)
    assert (await health(tracker, R1)).blocked_for == 0  # the same key, its budget gone
    other = Route(key=dataclasses.replace(KEY, name="q"), model="m1")  # no budget either
    await tracker.disable_key(other.key, 600, BlockReason.QUOTA)
    assert (await health(tracker, other)).blocked_for == pytest.approx(600)


async def test_a_period_that_ended_leaves_no_total_behind():
    """Each day and month makes a new total name per budgeted key and model: a process
    that kept every one it saw grew for as long as it ran."""
    now = [0.0]
    store = MemoryStore(lambda: now[0])
    await store.add("spend:key:a:2026-12-06", 1.0, ttl=60)
    store.set_total("spend:model:m:2026-12-06", 2.0, 60)
    now[0] = 120.0  # both periods over
    assert await store.add("spend:key:a:2026-12-07", 1.0, ttl=60) == 1.0
    assert set(store._totals) == {"spend:key:a:2026-12-07"}  # what is kept, not only shown
    store.set_total("spend:model:m:2026-12-07", 3.0, 60)
    assert set(store._totals) == {"spend:key:a:2026-12-07", "spend:model:m:2026-12-07"}
