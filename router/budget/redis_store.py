"""Redis budget store: many replicas share one budget.

Each key is a Redis hash with fields `steps`, `used` and `outcome`. Every operation that
reads and then writes is one Lua script, so it is atomic across replicas. Keys carry a
`{tenant}` hash tag, so all of one tenant's keys (its sessions and its daily cap) sit in
one Redis Cluster slot and a script may touch them together.

A session's entries are more fields of its hash (`r:<request id>` → step, `s:<step>` →
request id, `i:<idempotency key>` → what it was claimed with), so they expire with the
session, and the script that counts a step also writes its request id: no extra round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from router.budget.base import (
    ONE_STEP_TTL_S,
    Reservation,
    Scope,
    SessionInfo,
    StepStart,
    kept_scopes,
)

# A session's entries: fields of its hash named by these prefixes.
STEP_OF_REQUEST = "r:"  # + request id → the step's index
REQUEST_OF_STEP = "s:"  # + step index → the step's request id
CLAIMED_KEY = "i:"  # + idempotency key → what it was claimed with

# ARGV: ttl, then optionally the step's request id.
_BEGIN_STEP = f"""
local steps = redis.call('HINCRBY', KEYS[1], 'steps', 1)
if ARGV[2] then
  redis.call('HSET', KEYS[1], '{STEP_OF_REQUEST}' .. ARGV[2], steps - 1,
             '{REQUEST_OF_STEP}' .. (steps - 1), ARGV[2])
end
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
return {{steps - 1, used}}
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

# ARGV: field, value, ttl. Returns the value claimed before, or nil if this call claimed it.
_CLAIM = """
local claimed = redis.call('HGET', KEYS[1], ARGV[1])
if claimed then return claimed end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return false
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
        self._claim = self._redis.register_script(_CLAIM)

    def _key(self, key: str) -> str:
        # Store keys look like "<tenant>/<rest>"; the tenant becomes the Cluster hash tag.
        tenant, _, rest = key.partition("/")
        return f"{self._prefix}:{{{tenant}}}:{rest}"

    async def begin_step(
        self, session_key: str, ttl_s: int, request_id: str | None = None
    ) -> StepStart:
        if ttl_s <= ONE_STEP_TTL_S:  # a one-step session: nothing to keep
            return StepStart(0, 0)
        args: list[Any] = [ttl_s] if request_id is None else [ttl_s, request_id]
        step, used = await self._begin_step(keys=[self._key(session_key)], args=args)
        return StepStart(int(step), int(used))

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        kept = kept_scopes(scopes, cost)
        if kept is None:
            return None
        if not kept:  # nothing to count: a one-step session without a tenant window
            return Reservation((), cost)
        scopes = kept
        args: list[Any] = [cost]
        for scope in scopes:
            args += [scope.limit, scope.ttl_s]
        granted = await self._reserve(keys=[self._key(s.key) for s in scopes], args=args)
        return Reservation(tuple(s.key for s in scopes), cost) if granted == 1 else None

    async def refund(self, reservation: Reservation) -> None:
        if not reservation.keys:
            return
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

    async def step_of(self, session_key: str, request_id: str) -> int | None:
        value = await self._redis.hget(self._key(session_key), STEP_OF_REQUEST + request_id)
        return int(value) if value is not None else None

    async def request_of(self, session_key: str, step: int) -> str | None:
        value = await self._redis.hget(self._key(session_key), f"{REQUEST_OF_STEP}{step}")
        return _text(value)

    async def claim_key(self, session_key: str, key: str, value: str, ttl_s: int) -> str | None:
        claimed = await self._claim(
            keys=[self._key(session_key)], args=[CLAIMED_KEY + key, value, ttl_s]
        )
        return _text(claimed)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
