"""Budget stores by name: `memory`, `sqlite` (embedded default), `redis` (many replicas)."""

from __future__ import annotations

from pathlib import Path

from router.budget.base import (
    ONE_STEP_TTL_S,
    BudgetStore,
    BudgetStoreInUse,
    Reservation,
    Scope,
    SessionInfo,
    StepStart,
)

STORE_KINDS = ("memory", "sqlite", "redis")


def session_key(tenant: str, session: str) -> str:
    return f"{tenant}/s/{session}"


def tenant_day_key(tenant: str, day: str) -> str:
    return f"{tenant}/day/{day}"


def open_store(kind: str, *, sqlite_path: Path | None = None, redis_url: str = "") -> BudgetStore:
    """Open a budget store; heavy or optional clients are imported only when chosen."""
    if kind == "memory":
        from router.budget.memory import MemoryBudgetStore

        return MemoryBudgetStore()
    if kind == "sqlite":
        from router.budget.sqlite import SqliteBudgetStore

        if sqlite_path is None:
            raise ValueError("the sqlite budget store needs a path")
        return SqliteBudgetStore(sqlite_path)
    if kind == "redis":
        from router.budget.redis_store import RedisBudgetStore

        return RedisBudgetStore(redis_url)
    raise ValueError(f"unknown budget store {kind!r}; known: {', '.join(STORE_KINDS)}")


__all__ = [
    "ONE_STEP_TTL_S",
    "STORE_KINDS",
    "BudgetStore",
    "BudgetStoreInUse",
    "Reservation",
    "Scope",
    "SessionInfo",
    "StepStart",
    "open_store",
    "session_key",
    "tenant_day_key",
]
