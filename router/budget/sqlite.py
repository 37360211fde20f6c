"""SQLite budget store: the embedded default. Survives restarts; safe across processes on
one host (each write is one `BEGIN IMMEDIATE` transaction).

All SQLite work runs on one dedicated thread per store, so the event loop never blocks on
the file lock and the single connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from router.budget.base import Reservation, Scope, SessionInfo, StepStart

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key        TEXT PRIMARY KEY,
    steps      INTEGER NOT NULL DEFAULT 0,
    used       INTEGER NOT NULL DEFAULT 0,
    outcome    INTEGER NOT NULL DEFAULT 0,
    expires_at REAL    NOT NULL
) WITHOUT ROWID;
"""
_TOUCH = """
INSERT INTO counters (key, expires_at) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)
"""
_PURGE_EVERY = 5_000


class SqliteBudgetStore:
    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._writes = 0

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, work)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            self._writes += 1
            if self._writes % _PURGE_EVERY == 0:
                conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    @staticmethod
    def _expire(conn: sqlite3.Connection, keys: Sequence[str], now: float) -> None:
        conn.executemany(
            "DELETE FROM counters WHERE key = ? AND expires_at <= ?", [(k, now) for k in keys]
        )

    # -- the store --------------------------------------------------------------------------

    async def begin_step(self, session_key: str, ttl_s: int) -> StepStart:
        def work(conn: sqlite3.Connection) -> StepStart:
            now = time.time()
            self._expire(conn, [session_key], now)
            conn.execute(_TOUCH, (session_key, now + ttl_s))
            steps, used = conn.execute(
                "UPDATE counters SET steps = steps + 1 WHERE key = ? RETURNING steps, used",
                (session_key,),
            ).fetchone()
            return StepStart(steps - 1, used)

        return await self._run(work)

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        def work(conn: sqlite3.Connection) -> Reservation | None:
            now = time.time()
            self._expire(conn, [s.key for s in scopes], now)
            for scope in scopes:
                row = conn.execute("SELECT used FROM counters WHERE key = ?", (scope.key,))
                used = (row.fetchone() or (0,))[0]
                if used + cost > scope.limit:
                    return None
            for scope in scopes:
                conn.execute(_TOUCH, (scope.key, now + scope.ttl_s))
                conn.execute("UPDATE counters SET used = used + ? WHERE key = ?", (cost, scope.key))
            return Reservation(tuple(s.key for s in scopes), cost)

        return await self._run(work)

    async def refund(self, reservation: Reservation) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE counters SET used = max(used - ?, 0) WHERE key = ?",
                [(reservation.cost, key) for key in reservation.keys],
            )

        await self._run(work)

    async def used(self, key: str) -> int:
        info = await self._read(key)
        return info[1] if info else 0

    async def session(self, session_key: str) -> SessionInfo | None:
        info = await self._read(session_key)
        if info is None or info[0] == 0:
            return None
        return SessionInfo(info[0], info[1], bool(info[2]))

    async def _read(self, key: str) -> tuple[int, int, int] | None:
        def work(conn: sqlite3.Connection) -> tuple[int, int, int] | None:
            row = conn.execute(
                "SELECT steps, used, outcome FROM counters WHERE key = ? AND expires_at > ?",
                (key, time.time()),
            ).fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self._run(work)

    async def mark_outcome(self, session_key: str, ttl_s: int) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            now = time.time()
            self._expire(conn, [session_key], now)
            conn.execute(_TOUCH, (session_key, now + ttl_s))
            changed = conn.execute(
                "UPDATE counters SET outcome = 1 WHERE key = ? AND outcome = 0", (session_key,)
            ).rowcount
            return changed == 1

        return await self._run(work)

    async def ping(self) -> bool:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())
        return True

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)
