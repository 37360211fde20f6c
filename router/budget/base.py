"""The budget store interface.

A store keeps, per key, three integers: `steps` (agent steps seen in a session), `used`
(intervention budget units consumed) and `outcome` (whether the session's outcome was
reported), each key expiring after a period without writes. A *scope* is a key with a limit:
the session's budget C, or the tenant's daily cap. `reserve` takes the cost from every scope
at once or from none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class BudgetStoreInUse(RuntimeError):
    """The store's file is owned by another process."""


@dataclass(frozen=True, slots=True)
class Scope:
    """A budget that a reservation draws on, e.g. one session's C or a tenant's day."""

    key: str
    limit: int
    ttl_s: int


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
    async def begin_step(self, session_key: str, ttl_s: int) -> StepStart:
        """Count a new step in the session; return its index and the budget used so far."""
        ...

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        """Atomically take `cost` from every scope, or return None if any would exceed its limit."""
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

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
