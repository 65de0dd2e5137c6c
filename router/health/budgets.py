"""Spend per key and per model, per UTC day and month, against routes.yaml's budgets.

Totals live in the StateStore, so replicas sharing keys share budgets. A key that
reaches a budget leaves rotation until its period turns, the way a quota-dead key
does; a model that reaches one is skipped for its fallbacks. Requests already in flight
when a budget is reached still finish, so a period may overshoot by those.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.outcomes import BlockReason
from router.types import Budget, Config, ModelSpec, Route

log = structlog.get_logger("router.budgets")


def period_ends(now_epoch: float) -> dict[str, tuple[str, float]]:
    """Per period: (its name, seconds until it turns), in UTC."""
    now = datetime.fromtimestamp(now_epoch, UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    next_month = (now.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return {
        "day": (now.strftime("%Y-%m-%d"), (tomorrow - now).total_seconds()),
        "month": (now.strftime("%Y-%m"), (next_month - now).total_seconds()),
    }


class BudgetKeeper:
    def __init__(
        self,
        store: StateStore,
        health: HealthTracker,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._health = health
        self._wall = wall

    async def spend(self, route: Route, model: ModelSpec, usd: float) -> None:
        if usd <= 0 or (route.key.budget is None and model.budget is None):
            return  # the common case, on every request: no date arithmetic
        periods = period_ends(self._wall())
        key = route.key
        if key.budget is not None:
            seconds = await self._over(f"key:{key.name}", key.budget, usd, periods)
            if seconds is not None:
                await self._health.disable_key(route, seconds, BlockReason.BUDGET)
        if model.budget is not None:
            seconds = await self._over(f"model:{model.name}", model.budget, usd, periods)
            if seconds is not None:
                await self._health.block_model(model.name, seconds, BlockReason.BUDGET)

    async def rebudget(self, old: Config, new: Config) -> list[str]:
        """After a reload: the keys and models (by name, in both configs) whose budget
        changed and that are within the new one, or have none now, leave their budget
        block at once (an operator raising a budget means traffic now, not at the turn
        of the period). One still over its new budget stays out. The scopes lifted."""
        periods = period_ends(self._wall())
        changed = [
            *((f"key:{name}", old.keys[name].budget, key.budget)
              for name, key in new.keys.items() if name in old.keys),
            *((f"model:{name}", old.models[name].budget, model.budget)
              for name, model in new.models.items() if name in old.models),
        ]  # fmt: skip
        lifted = []
        for scope, before, after in changed:
            if before is None or before == after:
                continue  # no budget block to lift, or the same budget
            if await self._lift_within(scope, after, periods):
                lifted.append(scope)
        return lifted

    async def recheck(self, config: Config) -> list[str]:
        """At start, once the store has what it starts from (a snapshot, or Redis): the
        budget blocks it came with, set on an earlier config, are lifted for the keys and
        models within their budget now, or with none. A budget raised across a restart
        (a new ConfigMap rolled out, say) means traffic now, as it does across a reload.
        The scopes lifted."""
        scopes = [
            *((f"key:{name}", key.budget) for name, key in config.keys.items()),
            *((f"model:{name}", model.budget) for name, model in config.models.items()),
        ]
        states = await self.store.read([scope for scope, _ in scopes])
        periods = period_ends(self._wall())
        lifted = []
        for scope, budget in scopes:
            state = states.get(scope)
            if state is None or state.block is None or state.block.reason is not BlockReason.BUDGET:
                continue
            if await self._lift_within(scope, budget, periods):
                lifted.append(scope)
        return lifted

    async def _lift_within(
        self, scope: str, budget: Budget | None, periods: dict[str, tuple[str, float]]
    ) -> bool:
        """Lift the scope's budget block unless its spend is over `budget` (None: none)."""
        if budget is not None and await self._over(scope, budget, 0.0, periods) is not None:
            return False
        await self.store.lift(scope, BlockReason.BUDGET)
        return True

    async def _over(
        self, scope: str, budget: Budget, usd: float, periods: dict[str, tuple[str, float]]
    ) -> float | None:
        """Add `usd`; seconds until the longest exceeded period turns, or None."""
        out_for: float | None = None
        for period, cap in (("day", budget.usd_per_day), ("month", budget.usd_per_month)):
            name, turns_in = periods[period]
            total = await self.store.add(f"spend:{scope}:{name}", usd, ttl=turns_in + 60)
            if cap is not None and total >= cap:
                out_for = max(out_for or 0.0, turns_in)
        return out_for


RECHECK_WAIT = 1.0  # seconds a start waits for the recheck (Redis's first read)


async def start_recheck(keeper: BudgetKeeper, config: Callable[[], Config]) -> asyncio.Task[None]:
    """BudgetKeeper.recheck as a task, once its store is loaded, against the config
    serving then (`config()`: a reload may come first); returned when it is done or
    after RECHECK_WAIT, whichever comes first (the owner cancels it at shutdown). A
    store of one process is loaded at once, so the first request already sees the
    recheck; a Redis that answers slowly holds a start for a second at most, and one
    that is away gets the recheck once it has been read whole."""
    task = asyncio.create_task(_recheck(keeper, config), name="budget-recheck")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), RECHECK_WAIT)
    return task


async def _recheck(keeper: BudgetKeeper, config: Callable[[], Config]) -> None:
    await keeper.store.loaded()
    try:
        lifted = await keeper.recheck(config())
    except Exception as exc:  # a block left as it was must not end the process
        log.warning("budget_recheck_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        return
    if lifted:
        log.info("budget_blocks_lifted", scopes=lifted, when="start")
