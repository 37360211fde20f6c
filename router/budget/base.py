"""The budget store interface.

A store keeps, per key, three integers: `steps` (agent steps seen in a session), `used`
(intervention budget units consumed) and `outcome` (whether the session's outcome was
reported), each key expiring after a period without writes. A *scope* is a key with a limit:
the session's budget C, or the tenant's daily cap. `reserve` takes the cost from every scope
at once or from none.

A session also keeps two small maps that live and expire with it: its steps' request ids
(both ways, so step feedback can name a step by either), and the idempotency keys of the
feedback it has taken.

A key written with a lifetime (`ttl_s`) of `ONE_STEP_TTL_S`, 0, would expire as it is
written, so no store keeps it: that is a session sent without a session id (a one-step
session). Its `begin_step` is step 0 with nothing used, and a scope of it bounds the cost
of its one step alone; only the tenant's window (a scope with a lifetime) keeps a count.
Thousands of such requests a second leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

ONE_STEP_TTL_S = 0


class BudgetStoreInUse(RuntimeError):
    """The store's file is owned by another process."""


@dataclass(frozen=True, slots=True)
class Scope:
    """A budget that a reservation draws on, e.g. one session's C or a tenant's day."""

    key: str
    limit: int
    ttl_s: int

    @property
    def kept(self) -> bool:
        """Whether the store keeps this scope's count (not a one-step session's)."""
        return self.ttl_s > ONE_STEP_TTL_S


def kept_scopes(scopes: Sequence[Scope], cost: int) -> list[Scope] | None:
    """The scopes whose counts a store keeps, or None if `cost` alone exceeds the limit of
    a scope it does not keep (one step may never cost more than its session's C)."""
    if any(not s.kept and cost > s.limit for s in scopes):
        return None
    return [s for s in scopes if s.kept]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Budget units taken from scopes; refunding it returns exactly these units."""

    keys: tuple[str, ...]
    cost: int


@dataclass(frozen=True, slots=True)
class StepStart:
    """A session's step index (count of earlier steps) and the budget it has used."""

    step: int
    used: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    steps: int
    used: int
    outcome_reported: bool


class BudgetStore(Protocol):
    async def begin_step(
        self, session_key: str, ttl_s: int, request_id: str | None = None
    ) -> StepStart:
        """Count a new step in the session; return its index and the budget used so far.
        A `request_id` is remembered with the session as the step's id. With a `ttl_s` of
        `ONE_STEP_TTL_S` nothing is stored: step 0, nothing used."""
        ...

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        """Atomically take `cost` from every scope, or return None if any would exceed its
        limit. The reservation names the scopes that are kept (see `kept_scopes`)."""
        ...

    async def refund(self, reservation: Reservation) -> None:
        """Return a reservation's units to its scopes (never below zero)."""
        ...

    async def used(self, key: str) -> int: ...

    async def session(self, session_key: str) -> SessionInfo | None:
        """The session's counters, or None if it has no step (or expired)."""
        ...

    async def mark_outcome(self, session_key: str, ttl_s: int) -> bool:
        """Record that the outcome was reported; False if it already was."""
        ...

    async def step_of(self, session_key: str, request_id: str) -> int | None:
        """The index of the session's step that `request_id` answered, or None."""
        ...

    async def request_of(self, session_key: str, step: int) -> str | None:
        """The request id of the session's step `step`, or None (also where the store no
        longer knows it: the SQLite store keeps this direction in memory only)."""
        ...

    async def claim_key(self, session_key: str, key: str, value: str, ttl_s: int) -> str | None:
        """Remember `value` under the idempotency key `key` for the session, unless the key
        was claimed before: then return the value it was claimed with (and change nothing)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
