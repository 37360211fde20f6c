"""Redis budget store: many replicas share one budget.

Each key is a Redis hash with fields `steps`, `used` and `outcome`. Every operation that
reads and then writes is one Lua script, so it is atomic across replicas. Keys carry a
`{tenant}` hash tag, so all of one tenant's keys (its sessions and its daily cap) sit in
one Redis Cluster slot and a script may touch them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from router.budget.base import Reservation, Scope, SessionInfo, StepStart

_BEGIN_STEP = """
local steps = redis.call('HINCRBY', KEYS[1], 'steps', 1)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
return {steps - 1, used}
"""

# ARGV: cost, then (limit, ttl) for each key in KEYS order.
_RESERVE = """
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('HGET', key, 'used') or '0')
  if used + cost > tonumber(ARGV[2 * i]) then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'used', cost)
  local ttl = tonumber(ARGV[2 * i + 1])
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
return 1
"""

_REFUND = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local used = tonumber(redis.call('HGET', key, 'used') or '0')
    redis.call('HSET', key, 'used', math.max(used - tonumber(ARGV[1]), 0))
  end
end
return 1
"""

_MARK_OUTCOME = """
local first = redis.call('HSETNX', KEYS[1], 'outcome', 1)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return first
"""


class RedisBudgetStore:
    def __init__(self, url: str, prefix: str = "escalator", max_connections: int = 64) -> None:
        # A blocking pool: a burst beyond max_connections waits for a free connection
        # instead of failing the step.
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
        self._redis: Redis = Redis(connection_pool=pool)
        self._prefix = prefix
        self._begin_step = self._redis.register_script(_BEGIN_STEP)
        self._reserve = self._redis.register_script(_RESERVE)
        self._refund = self._redis.register_script(_REFUND)
        self._mark_outcome = self._redis.register_script(_MARK_OUTCOME)

    def _key(self, key: str) -> str:
        # Store keys look like "<tenant>/<rest>"; the tenant becomes the Cluster hash tag.
        tenant, _, rest = key.partition("/")
        return f"{self._prefix}:{{{tenant}}}:{rest}"

    async def begin_step(self, session_key: str, ttl_s: int) -> StepStart:
        step, used = await self._begin_step(keys=[self._key(session_key)], args=[ttl_s])
        return StepStart(int(step), int(used))

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        args: list[Any] = [cost]
        for scope in scopes:
            args += [scope.limit, scope.ttl_s]
        granted = await self._reserve(keys=[self._key(s.key) for s in scopes], args=args)
        return Reservation(tuple(s.key for s in scopes), cost) if granted == 1 else None

    async def refund(self, reservation: Reservation) -> None:
        await self._refund(keys=[self._key(k) for k in reservation.keys], args=[reservation.cost])

    async def used(self, key: str) -> int:
        value = await self._redis.hget(self._key(key), "used")
        return int(value) if value is not None else 0

    async def session(self, session_key: str) -> SessionInfo | None:
        fields = await self._redis.hmget(self._key(session_key), ["steps", "used", "outcome"])
        steps, used, outcome = (int(v) if v is not None else 0 for v in fields)
        if steps == 0:
            return None
        return SessionInfo(steps, used, bool(outcome))

    async def mark_outcome(self, session_key: str, ttl_s: int) -> bool:
        return bool(await self._mark_outcome(keys=[self._key(session_key)], args=[ttl_s]))

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
