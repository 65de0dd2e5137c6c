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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from router.health.scopes import account_scope
from router.health.store import StateStore
from router.health.tracker import HealthTracker
from router.outcomes import BlockReason
from router.types import Budget, Config, Key, ModelSpec, Route

log = structlog.get_logger("router.budgets")

_BUDGET = BlockReason.BUDGET


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


class LiveBudgets:
    """The budgets of the config serving now, by key and model name: one for the
    process, which a reload sets. A request is charged against these, not the budgets
    of the config it began on: a stream begun before a reload raised a budget would
    otherwise take its key out again, on the budget the operator had just raised."""

    __slots__ = ("keys", "models")

    def __init__(self, config: Config) -> None:
        self.keys: dict[str, Budget | None] = {}
        self.models: dict[str, Budget | None] = {}
        self.set(config)

    def set(self, config: Config) -> None:
        self.keys = {name: key.budget for name, key in config.keys.items()}
        self.models = {name: model.budget for name, model in config.models.items()}


class BudgetKeeper:
    def __init__(
        self,
        store: StateStore,
        health: HealthTracker,
        live: LiveBudgets,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._health = health
        self._live = live
        self._wall = wall

    async def spend(self, route: Route, model: ModelSpec, usd: float) -> None:
        """Add `usd` to the spend of the route's key and of `model`, where the request's
        config budgets them; each is out once over its budget in the config serving now
        (`LiveBudgets`; none there: counted, never out)."""
        if usd <= 0 or (route.key.budget is None and model.budget is None):
            return  # the common case, on every request: no date arithmetic
        periods = period_ends(self._wall())
        key, live = route.key, self._live
        if key.budget is not None:
            budget = live.keys.get(key.name)
            seconds = await self._over(f"key:{key.name}", budget, usd, periods)
            if seconds is not None:
                await self._health.disable_key(key, seconds, BlockReason.BUDGET)
        if model.budget is not None:
            budget = live.models.get(model.name)
            seconds = await self._over(f"model:{model.name}", budget, usd, periods)
            if seconds is not None:
                await self._health.block_model(model.name, seconds, BlockReason.BUDGET)

    async def rebudget(self, old: Config, new: Config) -> list[str]:
        """After a reload: the keys and models (by name, in both configs) whose budget
        changed and that are within the new one, or have none now, leave their budget
        block at once (an operator raising a budget means traffic now, not at the turn
        of the period). One still over its new budget stays out, and one over a budget
        lowered below its spend leaves now. The names lifted."""
        periods = period_ends(self._wall())
        changed = [
            *((_scopes(key), old.keys[name].budget, key.budget)
              for name, key in new.keys.items() if name in old.keys),
            *((_scopes(model), old.models[name].budget, model.budget)
              for name, model in new.models.items() if name in old.models),
        ]  # fmt: skip
        lifted = []
        for scopes, before, after in changed:
            if before is None or before == after:
                continue  # no budget block to lift, or the same budget
            if await self._lift_within(scopes, after, periods):
                lifted.append(scopes.name)
        await self._block_over(new, periods)
        return lifted

    async def recheck(self, config: Config) -> list[str]:
        """At start, once the store has what it starts from (a snapshot, or Redis): the
        budget blocks it came with, set on an earlier config, are lifted for the keys and
        models within their budget now, or with none. A budget raised across a restart
        (a new ConfigMap rolled out, say) means traffic now, as it does across a reload;
        one over a budget lowered across it leaves now. The names lifted."""
        scopes = [
            *((_scopes(key), key.budget) for key in config.keys.values()),
            *((_scopes(model), model.budget) for model in config.models.values()),
        ]
        states = await self.store.read([scope.block for scope, _ in scopes])
        periods = period_ends(self._wall())
        lifted = []
        for scope, budget in scopes:
            state = states.get(scope.block)
            if state is None or state.block is None or state.block.reason is not BlockReason.BUDGET:
                continue
            if await self._lift_within(scope, budget, periods):
                lifted.append(scope.name)
        await self._block_over(config, periods)
        return lifted

    async def _block_over(self, config: Config, periods: dict[str, tuple[str, float]]) -> None:
        """Keys and models over their budget now are out now, not after one more
        request: a budget lowered below the spend, a new credential under the name of a
        key that spent its budget (its block was the old account's). One out for its
        budget already is left as it is (a block written again would be told to every
        replica, after a lift another one may have made)."""
        budgeted = [
            *((_scopes(key), key.budget, key) for key in config.keys.values()),
            *((_scopes(model), model.budget, model) for model in config.models.values()),
        ]
        states = await self.store.read([scopes.block for scopes, budget, _ in budgeted if budget])
        for scopes, budget, of in budgeted:
            state = states.get(scopes.block)
            if budget is None or (state and state.block and state.block.reason is _BUDGET):
                continue
            seconds = await self._over(scopes.name, budget, 0.0, periods)
            if seconds is None:
                continue
            if isinstance(of, Key):
                await self._health.disable_key(of, seconds, _BUDGET)
            else:
                await self._health.block_model(of.name, seconds, _BUDGET)

    async def _lift_within(
        self, scopes: _Scopes, budget: Budget | None, periods: dict[str, tuple[str, float]]
    ) -> bool:
        """Lift the budget block unless the spend is over `budget` (None: none)."""
        if budget is not None and await self._over(scopes.name, budget, 0.0, periods) is not None:
            return False
        await self.store.lift(scopes.block, BlockReason.BUDGET)
        return True

    async def _over(
        self, scope: str, budget: Budget | None, usd: float, periods: dict[str, tuple[str, float]]
    ) -> float | None:
        """Add `usd` to the spend of `scope` (`key:<name>`, `model:<name>`: by name, so a
        new credential under a key's name keeps its spend); seconds until the longest
        exceeded period of `budget` turns, or None (always, with no budget)."""
        out_for: float | None = None
        caps = (budget.usd_per_day, budget.usd_per_month) if budget else (None, None)
        for period, cap in zip(("day", "month"), caps, strict=True):
            name, turns_in = periods[period]
            total = await self.store.add(f"spend:{scope}:{name}", usd, ttl=turns_in + 60)
            if cap is not None and total >= cap:
                out_for = max(out_for or 0.0, turns_in)
        return out_for


@dataclass(frozen=True, slots=True)
class _Scopes:
    name: str  # where the spend is counted, and what the log names
    block: str  # where the block is (a key's account: tracker.account_scope)


def _scopes(of: Key | ModelSpec) -> _Scopes:
    if isinstance(of, Key):
        return _Scopes(f"key:{of.name}", account_scope(of))
    return _Scopes(f"model:{of.name}", f"model:{of.name}")


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
