"""What the Redis state backend sends: the scripts that keep shared state consistent, and
the writes waiting for the next pipeline, coalesced per scope.

The scripts run atomically in Redis, so replicas writing at once agree without a lock:
the later block deadline wins, spend is summed, and a total pushed back after an outage
never lowers the one Redis holds.
"""

from __future__ import annotations

from router.outcomes import BlockReason, Headroom

# KEYS[1] block key; ARGV reason, ms. The later deadline wins, whoever writes first.
BLOCK = """
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 1
end
return 0
"""
# KEYS[1] block key; ARGV reason. Only a block for that reason ends.
LIFT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] total; ARGV amount, ms, channel, node, name. Atomic across replicas; the
# period's TTL is set once. The message carries the new sum, not the amount: every
# replica keeps the largest sum it has seen, which is never more than the true one.
SPEND = """
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


def to_ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class PendingWrites:
    """Writes waiting for Redis, coalesced: one entry per scope or total."""

    __slots__ = ("blocks", "headroom", "lifts", "spend")

    def __init__(self) -> None:
        self.blocks: dict[str, tuple[float, BlockReason]] = {}  # scope -> (deadline, reason)
        self.lifts: dict[str, BlockReason] = {}
        self.headroom: dict[str, tuple[Headroom, float]] = {}  # scope -> (it, deadline)
        self.spend: dict[str, tuple[float, float]] = {}  # total -> (amount, deadline)

    def __bool__(self) -> bool:
        return bool(self.blocks or self.lifts or self.headroom or self.spend)

    def block(self, scope: str, deadline: float, reason: BlockReason) -> None:
        self.lifts.pop(scope, None)
        current = self.blocks.get(scope)
        if current is None or current[0] < deadline:
            self.blocks[scope] = (deadline, reason)

    def lift(self, scope: str, reason: BlockReason) -> None:
        current = self.blocks.get(scope)
        if current is not None and current[1] is reason:
            del self.blocks[scope]
        self.lifts[scope] = reason

    def add(self, total: str, amount: float, deadline: float) -> None:
        before, _ = self.spend.get(total, (0.0, 0.0))
        self.spend[total] = (before + amount, deadline)

    def merge(self, earlier: PendingWrites) -> None:
        """Put back a batch that did not reach Redis, under what came since."""
        for scope, (deadline, reason) in earlier.blocks.items():
            if scope not in self.lifts:
                self.block(scope, deadline, reason)
        for scope, reason in earlier.lifts.items():
            if scope not in self.blocks:
                self.lifts[scope] = reason
        for scope, value in earlier.headroom.items():
            self.headroom.setdefault(scope, value)
        for total, (amount, deadline) in earlier.spend.items():
            self.add(total, amount, deadline)
