"""Shared state on Redis: each replica reads its own copy, writes through, hears the others.

No Redis round trip on the request path. Reads come from a local `MemoryStore`; a write
lands there first and is queued for Redis, where a background task applies it (blocks
as TTLs, the later deadline winning; spend with INCRBYFLOAT, atomically) and publishes
it, so the other replicas apply it to their copies within milliseconds. A periodic
reconciliation read catches what pub/sub missed: a replica that started late, a
message sent while this one was away. Pending writes are coalesced per scope (the
later block, the summed spend), so what waits for Redis is bounded by the config.

Redis down, killed or paused: requests go on against the local copy; the store logs
`state_store_degraded` once, says so in `degraded()` (/readyz detail and a metric), and
tries again after a short backoff. Each of its three tasks (writer, subscriber, reader)
recovers on its own success: a Redis that takes writes but refuses this user its
channel (an ACL without channel rights) stays degraded, logged once, not flapping.
When Redis answers again it gets this replica's live state back (a Redis that
restarted empty learns the blocks and spend it lost).

Shared: blocks (cooldowns, open circuits, disabled keys, budget blocks), the headroom
providers reported, spend totals. Per replica: the breaker's failure counts (each
replica judges what it saw; the circuit it opens is shared). What the writes send is
redis_writes.py's; what comes in (messages, a reconciliation's read) redis_reads.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from typing import Any

import structlog

from router.health import read_back
from router.health.memory import MemoryStore
from router.health.redis_reads import Incoming
from router.health.redis_writes import (
    APPLIED_MS,
    BLOCK,
    LIFT,
    LIFT_MARK_MS,
    PUSH,
    RAISE,
    SPEND,
    PendingWrites,
    to_ms,
)
from router.health.store import ScopeState
from router.outcomes import BlockReason, Headroom

try:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import ConnectionPool, parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoPermissionError, RedisError

    from router.health.redis_connection import SocketOpener, resolving
except ImportError:  # pragma: no cover - the config refuses backend: redis without it
    aioredis = None  # type: ignore[assignment]

log = structlog.get_logger("router.state")

# Whatever the URL says: a Redis that does not answer within this is away, and the
# client does not retry on its own (the backoff below is the breaker).
SOCKET_TIMEOUT = 0.25
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0
RECONCILE_SECONDS = 5.0
FLUSH_DELAY = 0.05  # seconds a write waits for others to share its pipeline
CLOSE_WAIT = 1.0  # seconds close() waits for its background tasks to end
_WRITER, _SUBSCRIBER, _READER = "writer", "subscriber", "reader"  # the tasks' problems
_READ_KINDS = frozenset({"block", "headroom", "total"})  # what a reconciliation takes in


def _for_good(error: Exception) -> bool:
    """Whether Redis refused a command for what it asked (so asking again is no use), not
    for its own state at the time."""
    text = str(error)
    return (
        "WRONGTYPE" in text or "not a valid float" in text or isinstance(error, NoPermissionError)
    )


class RedisStore:
    """A `StateStore` whose copy is local and whose writes go through to Redis."""

    def __init__(
        self,
        local: MemoryStore,
        url: str,
        prefix: str,
        clock: Callable[[], float],
        *,
        open_socket: SocketOpener | None = None,
    ) -> None:
        """`clock`: the local copy's, so pending deadlines and its expiries agree.
        `open_socket`: connects to the URL's host, its name looked up off the pool every
        lookup shares (redis_connection.py); without it, redis-py looks it up there."""
        if aioredis is None:
            raise RuntimeError("state.backend redis needs the redis package")
        self._local = local
        self._url = url
        self._prefix = prefix
        self._channel = f"{prefix}:events"
        self._node = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._clock = clock
        self._pending = PendingWrites()
        self._batches = itertools.count()  # a batch's number, in its id with _node
        self._confirmed: list[str] = []  # sets of applied spend to delete at the next write
        self._incoming = Incoming(local, self._node, clock)  # what others wrote, taken in
        self._dirty = asyncio.Event()
        # Per task (writer, subscriber, reader): what failed it last, until it succeeds.
        self._problems: dict[str, str] = {}
        self._denied: Exception | None = None  # the last batch's refusal by the ACL
        # Push the local copy at the next good write: Redis may lack it (not needed once
        # the first read has found what Redis holds).
        self._resync = True
        self._tasks: list[asyncio.Task[None]] = []
        self._first_read = asyncio.Event()  # a reconciliation read all of Redis's state
        self._raise_totals: list[tuple[str, float, float]] = []  # pushed with a resync
        options: dict[str, Any] = parse_url(url)
        options.update(
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            max_connections=8,
        )
        options = resolving(options, open_socket)
        self._redis = aioredis.Redis(connection_pool=ConnectionPool(**options))
        self._block_script = self._redis.register_script(BLOCK)
        self._lift_script = self._redis.register_script(LIFT)
        self._push_script = self._redis.register_script(PUSH)
        self._spend_script = self._redis.register_script(SPEND)
        self._raise_script = self._redis.register_script(RAISE)

    def start(self) -> None:
        for name, work in (
            ("state-writer", self._write_forever),
            ("state-subscriber", self._listen_forever),
            ("state-reconciler", self._reconcile_forever),
        ):
            self._tasks.append(asyncio.create_task(work(), name=name))

    async def loaded(self) -> None:
        await self._first_read.wait()

    # The StateStore interface: the local copy answers, Redis hears of it later.

    async def read(self, scopes: Sequence[str]) -> dict[str, ScopeState]:
        return await self._local.read(scopes)

    def peek(self, scope: str) -> ScopeState | None:
        return self._local.peek(scope)

    async def block(self, scope: str, seconds: float, reason: BlockReason) -> bool:
        fresh = await self._local.block(scope, seconds, reason)
        self._pending.block(scope, self._clock() + seconds, reason)
        self._dirty.set()
        return fresh

    async def lift(self, scope: str, reason: BlockReason) -> None:
        await self._local.lift(scope, reason)
        self._incoming.note_lift(scope)
        self._pending.lift(scope, reason)
        self._dirty.set()

    async def count(self, scope: str, counter: str, ttl: float, *, window: bool = False) -> int:
        return await self._local.count(scope, counter, ttl, window=window)

    async def reset(self, scope: str, counters: Sequence[str] = ()) -> None:
        await self._local.reset(scope, counters)

    async def put_headroom(self, scope: str, headroom: Headroom, ttl: float) -> None:
        await self._local.put_headroom(scope, headroom, ttl)
        self._pending.headroom[scope] = (headroom, self._clock() + ttl)
        self._dirty.set()

    async def add(self, counter: str, amount: float, ttl: float) -> float:
        # Every replica's new sum reaches this copy through pub/sub: the total here is
        # the shared one as of the last message, plus what this replica spent since.
        total = await self._local.add(counter, amount, ttl)
        self._pending.add(counter, amount, self._clock() + ttl)
        self._dirty.set()
        return total

    def forget(self, scopes: Sequence[str], totals: Sequence[str] = ()) -> None:
        self._local.forget(scopes, totals)  # the shared entries stay: see StateStore

    def announce_probe(self, scope: str, seconds: float) -> None:
        # Not in this copy (the probe is this replica's own); the others get a block.
        self._pending.block(scope, self._clock() + seconds, BlockReason.PROBING)
        self._dirty.set()

    def scopes(self) -> Collection[str]:
        return self._local.scopes()

    def degraded(self) -> str | None:
        return next(iter(self._problems.values()), None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Bounded: redis-py can swallow a cancellation that lands in a pipeline's call
        # (redis/redis-py#2028, #2551), and the writer then waits for its next write
        # forever. Seen as a shutdown that never ended; such a task is cancelled again.
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_WAIT)
            for task in stuck:
                task.cancel()
            if stuck:
                _, stuck = await asyncio.wait(stuck, timeout=CLOSE_WAIT)
            if stuck:
                log.warning("state_tasks_left_running", tasks=sorted(t.get_name() for t in stuck))
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: nothing to report at shutdown
        # What the last requests wrote, even while degraded: Redis may be back, and the
        # writer only waiting out its backoff (at most 1 s here if it is not).
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                while self._pending:  # twice at most: spend held back behind a batch
                    await self._flush(self._take())
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._redis.aclose()
        await self._local.close()

    # Background work.

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    def _mark(self, scope: str, reason: BlockReason) -> str:
        """Where a lift of `scope`'s block for `reason` is marked (redis_writes.LIFT)."""
        return self._key("lifted", f"{reason.value}:{scope}")

    def _take(self) -> PendingWrites:
        batch, self._pending = self._pending, PendingWrites()
        return batch

    async def _write_forever(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            await self._dirty.wait()
            # Gather what the next few milliseconds write into one pipeline: under load,
            # one round of Redis work serves many requests instead of one each.
            await asyncio.sleep(FLUSH_DELAY)
            self._dirty.clear()
            batch = self._take()
            try:
                if self._resync:
                    self._push_local(batch)
                await self._flush(batch)
            except asyncio.CancelledError:  # shut down mid-write: close() sends it again
                self._pending.merge(batch)
                raise
            except Exception as exc:  # Redis away; anything else must not stop the sync either
                self._pending.merge(batch)
                self._degrade(exc, _WRITER)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._dirty.set()
                continue
            backoff = BACKOFF_FIRST
            self._resync = False
            if self._denied is not None:
                self._degrade(self._denied, _WRITER, resync=False)
                self._denied = None
            else:
                self._recover(_WRITER)

    def _push_local(self, batch: PendingWrites) -> None:
        """This replica's live copy, for a Redis that may have lost it."""
        now = self._clock()
        live = self._local.live()
        for scope, left, reason in live.blocks:
            if reason in batch.lifts.get(scope, ()):
                # Lifted here while Redis was away (an operator's restore), and the block
                # since taken back from a replica that pushed its old copy: the lift is
                # the newer, and goes in this batch; the push would cancel it.
                continue
            if scope in batch.blocks:
                continue  # blocked here since: that one goes as it is, the newer
            # A copy: refused by a lift made elsewhere meanwhile (its mark; PUSH).
            batch.pushed[scope] = (now + left, reason)
        for scope, headroom, left in live.headroom:
            batch.headroom.setdefault(scope, (headroom, now + left))
        self._raise_totals = live.totals

    async def _flush(self, batch: PendingWrites) -> None:
        now = self._clock()
        publish: list[dict[str, Any]] = []
        spent: list[tuple[str, float, int]] = []  # total, deadline, its answer's place
        queued = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope, (deadline, reason) in batch.blocks.items():
                if deadline > now:
                    ms = to_ms(deadline - now)
                    keys = [self._key("block", scope), self._mark(scope, reason)]
                    await self._block_script(keys=keys, args=[reason.value, ms], client=pipe)
                    queued += 1
                    publish.append({"op": "block", "scope": scope, "reason": reason, "ms": ms})
            for scope, (deadline, reason) in batch.pushed.items():
                if deadline > now:
                    keys = [self._key("block", scope), self._mark(scope, reason)]
                    args = [reason.value, to_ms(deadline - now), self._channel, self._node, scope]
                    await self._push_script(keys=keys, args=args, client=pipe)  # publishes
                    queued += 1
            for scope, reasons in batch.lifts.items():
                key = self._key("block", scope)
                for reason in sorted(reasons):
                    keys = [key, self._mark(scope, reason)]
                    await self._lift_script(
                        keys=keys, args=[reason.value, LIFT_MARK_MS], client=pipe
                    )
                    queued += 1
                    publish.append({"op": "lift", "scope": scope, "reason": reason})
            for scope, (headroom, deadline) in batch.headroom.items():
                if deadline > now:
                    ms = to_ms(deadline - now)
                    value = json.dumps(asdict(headroom))
                    pipe.set(self._key("headroom", scope), value, px=ms)
                    queued += 1
                    publish.append({"op": "headroom", "scope": scope, "value": value, "ms": ms})
            batch.seal(f"{self._node}:{next(self._batches)}")
            for (sent_in, total), (amount, deadline) in batch.sent.items():
                ms = to_ms(deadline - now)
                keys = [self._key("total", total), self._key("applied", sent_in)]
                args = [repr(amount), ms, self._channel, self._node, total, APPLIED_MS]
                await self._spend_script(keys=keys, args=args, client=pipe)  # publishes too
                spent.append((total, deadline, queued))
                queued += 1
            for total, value, left in self._raise_totals:
                # Less what this replica holds back for its next batch (behind one still
                # unconfirmed): that batch adds it, and a raise that held it too would
                # count it twice. Every other amount of the copy's total is in Redis by
                # now, or in this pipeline's spend before it.
                held = batch.spend.get(total)
                if held is not None:
                    value -= held[0]
                key = self._key("total", total)
                await self._raise_script(keys=[key], args=[repr(value), to_ms(left)], client=pipe)
            for message in publish:
                pipe.publish(self._channel, json.dumps({"from": self._node, **message}))
            confirmed = self._confirmed
            if confirmed:  # earlier batches' sets, no longer needed: they came back
                pipe.delete(*confirmed)
            if _WRITER in self._problems:
                pipe.ping()  # an empty batch proves nothing about a Redis that was away
            if not pipe.command_stack:
                return
            # A command Redis refuses for good (a key of another type, a total that is no
            # number) is that command's answer, not a failed batch: sent again, the rest
            # would go again too, and the refusal would hold every write back. Any other
            # error (OOM, LOADING, READONLY after a failover, BUSY) passes: the batch is
            # sent again, whole, once Redis can take it (its spend counted once).
            answers = await pipe.execute(raise_on_error=False)
        self._settle(batch, answers, spent, now)
        await self._lifted(batch)
        if batch.spend:  # held back behind a batch confirmed just now: in the next one
            for total, (amount, deadline) in batch.spend.items():
                self._pending.add(total, amount, deadline)
            self._dirty.set()

    def _settle(
        self,
        batch: PendingWrites,
        answers: list[Any],
        spent: list[tuple[str, float, int]],
        now: float,
    ) -> None:
        """A batch's answers: an error Redis may not give again fails the batch (raised);
        otherwise it is done with, and the shared totals it learnt go to the copy."""
        refused = [answer for answer in answers if isinstance(answer, Exception)]
        for error in refused:
            if not _for_good(error):
                raise error
        self._raise_totals = []
        self._confirmed = list({self._key("applied", sent_in) for sent_in, _ in batch.sent})
        batch.sent.clear()  # applied, or refused for good: nothing of it is sent again
        # Refused by the ACL (a channel, a key pattern not granted): the same every time,
        # until an operator grants it. Not sent again, and not logged per batch: the
        # writer is degraded, once (`_write_forever`).
        self._denied = next((e for e in refused if isinstance(e, NoPermissionError)), None)
        refused = [error for error in refused if not isinstance(error, NoPermissionError)]
        if refused:
            log.warning("state_write_refused", count=len(refused), error=str(refused[0])[:200])
        # The spend script answers with the shared total, which this copy may lag.
        for total, deadline, at in spent:
            left = max(deadline - now, 0.001)
            with contextlib.suppress(ValueError, TypeError):
                self._local.set_total(total, read_back.amount(answers[at]), left, at_least=True)

    async def _lifted(self, batch: PendingWrites) -> None:
        """The lifts of a batch Redis has applied. A read of Redis begun before that
        moment may still find the block, and a replica that pushed its old copy back may
        have sent it here meanwhile: the lift is remembered from now, and made again in
        this copy, unless this replica has blocked the scope since (its block is the
        newer, and on its way)."""
        for scope, reasons in batch.lifts.items():
            self._incoming.note_lift(scope)
            if scope not in self._pending.blocks:
                for reason in reasons:
                    await self._local.lift(scope, reason)

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            subscribed = False
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if not subscribed:
                        # Refused (NOPERM), the error comes here, not from subscribe().
                        subscribed = True
                        backoff = BACKOFF_FIRST
                        self._recover(_SUBSCRIBER)
                    if message is not None:
                        await self._incoming.message(message["data"])
            except Exception as exc:  # Redis away; anything else must not stop the sync either
                # A subscription lost (Redis restarted, maybe empty) calls for a push of
                # this copy; one refused (a channel the ACL does not grant) does not: it
                # would push the whole copy every few seconds for good, putting back
                # blocks the other replicas lifted, which this one never hears of.
                self._degrade(exc, _SUBSCRIBER, resync=subscribed)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await pubsub.aclose()

    async def _reconcile_forever(self) -> None:
        first = True
        while True:
            try:
                await self._reconcile()
                self._recover(_READER)
                if first and not self._problems:
                    # The copy now holds what Redis holds: nothing to push back to it. A
                    # push would put back a block another replica lifts meanwhile.
                    self._resync = False
                # Whole: a read cut short would show blocks without the spend behind them.
                self._first_read.set()
            except Exception as exc:  # Redis away; anything else must not stop the sync either
                self._degrade(exc, _READER)
            first = False
            await asyncio.sleep(RECONCILE_SECONDS)

    async def _reconcile(self) -> None:
        """Read what Redis holds into the local copy: the later block wins, the larger
        total (never lowered: a Redis that lost a total gets it back from the resync),
        the headroom Redis has."""
        started = self._incoming.read_begins()
        # One scan for the three kinds: a SCAN walks the whole database, whatever it
        # matches, so its cost is the database's size (README: a database of its own).
        prefix = f"{self._prefix}:"
        found: list[tuple[bytes, str, str]] = []  # key, kind, name
        async for key in self._redis.scan_iter(match=f"{prefix}*", count=1000):
            kind, _, name = key[len(prefix) :].decode(errors="replace").partition(":")
            if kind in _READ_KINDS:
                found.append((key, kind, name))
        if not found:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _, _ in found:
                pipe.get(key)
                pipe.pttl(key)
            # A key of another type (WRONGTYPE) is an error answer of its own, not one
            # that stops every reconcile from then on.
            answers = await pipe.execute(raise_on_error=False)
        for (_, kind, name), value, ms in zip(found, answers[::2], answers[1::2], strict=True):
            await self._incoming.entry(kind, name, value, ms, started)

    def _degrade(self, exc: BaseException, task: str, *, resync: bool = True) -> None:
        problem = f"{type(exc).__name__}: {exc}"[:200]
        if not self._problems:
            log.warning(
                "state_store_degraded",
                error=problem,
                detail="serving from this replica's copy; retrying Redis in the background",
            )
        self._problems[task] = problem
        if resync:
            # Push this replica's copy once Redis answers again: it may have restarted
            # empty.
            self._resync = True
            self._dirty.set()

    def _recover(self, task: str) -> None:
        was = self._problems.pop(task, None)
        if was is not None and not self._problems:
            log.info("state_store_recovered", was=was)
