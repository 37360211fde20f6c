"""In-process budget store: one replica, lost on restart. For tests and single-process use."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from router.budget.base import Reservation, Scope, SessionInfo, StepStart

_SWEEP_EVERY = 10_000


@dataclass(slots=True)
class _Counters:
    steps: int = 0
    used: int = 0
    outcome: bool = False
    expires_at: float = 0.0


class MemoryBudgetStore:
    """Atomic because no method awaits between reading and writing its counters.

    Every change to a key's counters ends in `_written`, the hook through which the SQLite
    store persists them.
    """

    def __init__(self) -> None:
        self._keys: dict[str, _Counters] = {}
        self._writes = 0
        self._next_sweep = _SWEEP_EVERY

    def _written(self, key: str, counters: _Counters) -> None:
        """Called after every change to `key`'s counters."""

    def _get(self, key: str, now: float) -> _Counters | None:
        counters = self._keys.get(key)
        if counters is not None and counters.expires_at <= now:
            del self._keys[key]
            return None
        return counters

    def _touch(self, key: str, ttl_s: int, now: float) -> _Counters:
        counters = self._get(key, now)
        if counters is None:
            counters = self._keys[key] = _Counters()
        counters.expires_at = max(counters.expires_at, now + ttl_s)
        self._writes += 1
        if self._writes >= self._next_sweep:
            self._sweep(now)
            self._keys.setdefault(key, counters)
            # Amortised: a sweep visits every key, so a large store sweeps less often.
            self._next_sweep = self._writes + max(_SWEEP_EVERY, len(self._keys))
        return counters

    def _sweep(self, now: float) -> None:
        """Forget expired keys."""
        self._keys = {k: c for k, c in self._keys.items() if c.expires_at > now}

    async def begin_step(self, session_key: str, ttl_s: int) -> StepStart:
        counters = self._touch(session_key, ttl_s, time.time())
        counters.steps += 1
        self._written(session_key, counters)
        return StepStart(counters.steps - 1, counters.used)

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        now = time.time()
        for scope in scopes:
            counters = self._get(scope.key, now)
            if (counters.used if counters else 0) + cost > scope.limit:
                return None
        for scope in scopes:
            counters = self._touch(scope.key, scope.ttl_s, now)
            counters.used += cost
            self._written(scope.key, counters)
        return Reservation(tuple(scope.key for scope in scopes), cost)

    async def refund(self, reservation: Reservation) -> None:
        now = time.time()
        for key in reservation.keys:
            counters = self._get(key, now)
            if counters is not None:
                counters.used = max(counters.used - reservation.cost, 0)
                self._written(key, counters)

    async def used(self, key: str) -> int:
        counters = self._get(key, time.time())
        return counters.used if counters else 0

    async def session(self, session_key: str) -> SessionInfo | None:
        counters = self._get(session_key, time.time())
        if counters is None or counters.steps == 0:
            return None
        return SessionInfo(counters.steps, counters.used, counters.outcome)

    async def mark_outcome(self, session_key: str, ttl_s: int) -> bool:
        counters = self._touch(session_key, ttl_s, time.time())
        first = not counters.outcome
        counters.outcome = True
        self._written(session_key, counters)
        return first

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._keys.clear()
