"""In-process budget store: one replica, lost on restart. For tests and single-process use."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from router.budget.base import (
    ONE_STEP_TTL_S,
    Reservation,
    Scope,
    SessionInfo,
    StepStart,
    kept_scopes,
)

_SWEEP_EVERY = 10_000


@dataclass(slots=True)
class _Counters:
    steps: int = 0
    used: int = 0
    outcome: bool = False
    expires_at: float = 0.0
    # A session's entries, made on the first: most keys have none.
    step_of: dict[str, int] | None = None  # request id → step index
    request_of: dict[int, str] | None = None  # step index → request id
    claims: dict[str, str] | None = None  # idempotency key → what it was claimed with


class MemoryBudgetStore:
    """Atomic because no method awaits between reading and writing its counters.

    Every change to a key's counters ends in `_written`, and every new entry passes through
    `_request_written` or `_claim_written`: the hooks through which the SQLite store persists
    them (and `_stored_step`, `_stored_claim` read back what left memory).
    """

    def __init__(self) -> None:
        self._keys: dict[str, _Counters] = {}
        self._writes = 0
        self._next_sweep = _SWEEP_EVERY

    def _written(self, key: str, counters: _Counters) -> None:
        """Called after every change to `key`'s counters."""

    def _request_written(self, key: str, request_id: str, step: int, expires_at: float) -> None:
        """Called for every step's request id."""

    def _claim_written(self, key: str, claim: str, value: str, expires_at: float) -> None:
        """Called for every idempotency key claimed."""

    def _stored_step(self, key: str, request_id: str, now: float) -> int | None:
        """A live session's step that memory does not hold (the SQLite store's file may)."""
        return None

    def _stored_claim(self, key: str, claim: str, now: float) -> str | None:
        """A live session's claim that memory does not hold (the SQLite store's file may)."""
        return None

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

    async def begin_step(
        self, session_key: str, ttl_s: int, request_id: str | None = None
    ) -> StepStart:
        if ttl_s <= ONE_STEP_TTL_S:  # a one-step session: nothing to keep
            return StepStart(0, 0)
        counters = self._touch(session_key, ttl_s, time.time())
        step = counters.steps
        counters.steps += 1
        if request_id is not None:
            if counters.step_of is None or counters.request_of is None:
                counters.step_of, counters.request_of = {}, {}
            counters.step_of[request_id] = step
            counters.request_of[step] = request_id
            self._request_written(session_key, request_id, step, counters.expires_at)
        self._written(session_key, counters)
        return StepStart(step, counters.used)

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        kept = kept_scopes(scopes, cost)
        if kept is None:
            return None
        scopes, now = kept, time.time()
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

    async def step_of(self, session_key: str, request_id: str) -> int | None:
        now = time.time()
        counters = self._get(session_key, now)
        if counters is None:
            return None
        step = counters.step_of.get(request_id) if counters.step_of else None
        return step if step is not None else self._stored_step(session_key, request_id, now)

    async def request_of(self, session_key: str, step: int) -> str | None:
        counters = self._get(session_key, time.time())
        return counters.request_of.get(step) if counters and counters.request_of else None

    async def claim_key(self, session_key: str, key: str, value: str, ttl_s: int) -> str | None:
        now = time.time()
        counters = self._get(session_key, now)
        if counters is not None:
            claimed = counters.claims.get(key) if counters.claims else None
            if claimed is None:
                claimed = self._stored_claim(session_key, key, now)
            if claimed is not None:
                return claimed
        counters = self._touch(session_key, ttl_s, now)
        if counters.claims is None:
            counters.claims = {}
        counters.claims[key] = value
        self._claim_written(session_key, key, value, counters.expires_at)
        self._written(session_key, counters)
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._keys.clear()
