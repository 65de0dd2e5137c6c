"""What the Redis state backend sends: the scripts that keep shared state consistent, and
the writes waiting for the next pipeline, coalesced per scope.

The scripts run atomically in Redis, so replicas writing at once agree without a lock:
the later block deadline wins, spend is summed, and a total pushed back after an outage
never lowers the one Redis holds.
"""

from __future__ import annotations

from router.health.read_back import MAX_STATE_SECONDS
from router.outcomes import BlockReason, Headroom

# KEYS[1] block key, KEYS[2] its lift's mark for the reason; ARGV reason, ms. The later
# deadline wins, whoever writes first. A block seen now is newer than any lift before it:
# the mark goes.
BLOCK = """
redis.call('DEL', KEYS[2])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 1
end
return 0
"""
# KEYS[1] block key, KEYS[2] its lift's mark; ARGV reason, the mark's ms. Only a block for
# that reason ends. The mark outlasts any copy of the block a replica may push back
# after an outage (PUSH): one that missed the lift (its subscription came back after
# it) would block the scope again, everywhere.
LIFT = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] block key, KEYS[2] its lift's mark; ARGV reason, ms, channel, node, scope. A
# replica's copy pushed back after an outage: as BLOCK, unless the block was lifted
# since (the mark); told to the others only when it is set.
PUSH = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  redis.call('PUBLISH', ARGV[3], cjson.encode({op = 'block', from = ARGV[4], scope = ARGV[5],
    reason = ARGV[1], ms = ttl}))
  return 1
end
return 0
"""
# How long a lift's mark stays: as long as any block may (read_back.MAX_STATE_SECONDS).
LIFT_MARK_MS = int(MAX_STATE_SECONDS * 1000)
# KEYS[1] total, KEYS[2] the sending batch's set of totals applied; ARGV amount, ms,
# channel, node, name, the set's ms. Atomic across replicas; the period's TTL is set
# once. Applied once per batch and total: a batch sent again (its answer came late, or
# Redis went away mid-way) finds its name in the set and adds nothing twice. The message
# carries the new sum, not the amount: every replica keeps the largest sum it has seen,
# which is never more than the true one.
SPEND = """
if redis.call('SADD', KEYS[2], ARGV[5]) == 0 then
  return redis.call('GET', KEYS[1]) or '0'
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], cjson.encode({op = 'spend', from = ARGV[4], total = ARGV[5],
  value = total, ms = tonumber(ARGV[2])}))
return total
"""
# KEYS[1] total; ARGV total, ms. After an outage: at least what this replica counted.
RAISE = """
if (tonumber(redis.call('GET', KEYS[1])) or 0) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
"""


# How long a batch's set of applied totals is kept: a batch sent again later than this
# (Redis away longer, after a write that landed unconfirmed) would count its spend twice.
APPLIED_MS = 15 * 60 * 1000


def to_ms(seconds: float) -> int:
    """Seconds as the milliseconds Redis takes: at least 1, at most MAX_STATE_SECONDS
    (comparisons first: int() of an infinite or NaN float raises)."""
    if not seconds > 0.001:
        return 1
    return int(min(seconds, MAX_STATE_SECONDS) * 1000)


class PendingWrites:
    """Writes waiting for Redis, coalesced: one entry per scope or total. Spend once sent
    keeps the batch it went in (`sent`), so that sending it again is a no-op where it
    landed; only spend not yet sent (`spend`) is summed with what comes after. A total
    has one batch unconfirmed at most: while Redis is away, what it spends meanwhile is
    summed in `spend`, not sealed into a batch per failed attempt (720 an hour each)."""

    __slots__ = ("blocks", "headroom", "lifts", "pushed", "sent", "spend")

    def __init__(self) -> None:
        self.blocks: dict[str, tuple[float, BlockReason]] = {}  # scope -> (deadline, reason)
        # The copy's blocks pushed back after an outage (PUSH): a lift since wins over them.
        self.pushed: dict[str, tuple[float, BlockReason]] = {}
        # scope -> the reasons lifted: a probe's success lifts CIRCUIT_OPEN and PROBING
        self.lifts: dict[str, set[BlockReason]] = {}
        self.headroom: dict[str, tuple[Headroom, float]] = {}  # scope -> (it, deadline)
        self.spend: dict[str, tuple[float, float]] = {}  # total -> (amount, deadline)
        # (batch id, total) -> (amount, deadline): sent, not yet confirmed
        self.sent: dict[tuple[str, str], tuple[float, float]] = {}

    def __bool__(self) -> bool:
        return bool(
            self.blocks or self.pushed or self.lifts or self.headroom or self.spend or self.sent
        )

    def seal(self, batch: str) -> None:
        """Give the spend not yet sent to `batch`, before it is sent, but for totals with
        a batch still unconfirmed: theirs stays in `spend`, for once that one is."""
        unconfirmed = {total for _, total in self.sent} if self.sent else ()
        for total, value in self.spend.items():
            if total not in unconfirmed:
                self.sent[(batch, total)] = value
        if unconfirmed:
            self.spend = {t: v for t, v in self.spend.items() if t in unconfirmed}
        else:
            self.spend.clear()

    def block(self, scope: str, deadline: float, reason: BlockReason) -> None:
        self.lifts.pop(scope, None)
        current = self.blocks.get(scope)
        if current is None or current[0] < deadline:
            self.blocks[scope] = (deadline, reason)

    def lift(self, scope: str, reason: BlockReason) -> None:
        current = self.blocks.get(scope)
        if current is not None and current[1] is reason:
            del self.blocks[scope]
        self.lifts.setdefault(scope, set()).add(reason)

    def add(self, total: str, amount: float, deadline: float) -> None:
        before, _ = self.spend.get(total, (0.0, 0.0))
        self.spend[total] = (before + amount, deadline)

    def merge(self, earlier: PendingWrites) -> None:
        """Put back a batch that did not reach Redis (`earlier`) under these writes, which
        came since: a lift or block made meanwhile wins over the batch's."""
        for scope, (deadline, reason) in earlier.blocks.items():
            if scope not in self.lifts:
                self.block(scope, deadline, reason)
        for scope, value in earlier.pushed.items():
            if scope not in self.lifts and scope not in self.blocks:
                self.pushed.setdefault(scope, value)
        for scope, reasons in earlier.lifts.items():
            if scope not in self.blocks:
                self.lifts.setdefault(scope, set()).update(reasons)
        for scope, value in earlier.headroom.items():
            self.headroom.setdefault(scope, value)
        for total, (amount, deadline) in earlier.spend.items():
            self.add(total, amount, deadline)
        self.sent.update(earlier.sent)
