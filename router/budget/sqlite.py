"""SQLite budget store: the embedded default. Survives restarts; safe across processes on
one host (every read-modify-write is one `BEGIN IMMEDIATE` transaction).

Each operation first runs on the event loop's own thread with no busy wait: an uncontended
transaction takes ~10 µs, less than handing it to a thread. Only when another process holds
the write lock does it retry on a worker thread that may wait for the lock. WAL checkpoints,
the one slow thing SQLite does, also run on the worker thread.
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
Work = Callable[[sqlite3.Connection, float], T]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key        TEXT PRIMARY KEY,
    steps      INTEGER NOT NULL DEFAULT 0,
    used       INTEGER NOT NULL DEFAULT 0,
    outcome    INTEGER NOT NULL DEFAULT 0,
    expires_at REAL    NOT NULL
) WITHOUT ROWID;
"""
# Take the key, starting it afresh if it expired; `?1` is now, `?2` the new expiry.
_RESET_IF_EXPIRED = """
INSERT INTO counters (key, expires_at) VALUES (?3, ?2)
ON CONFLICT (key) DO UPDATE SET
    steps   = iif(expires_at <= ?1, 0, steps),
    used    = iif(expires_at <= ?1, 0, used),
    outcome = iif(expires_at <= ?1, 0, outcome),
    expires_at = max(iif(expires_at <= ?1, 0, expires_at), ?2)
"""
# A step is one statement, so it needs no explicit transaction (one commit, not three).
_BEGIN_STEP = """
INSERT INTO counters (key, steps, expires_at) VALUES (?3, 1, ?2)
ON CONFLICT (key) DO UPDATE SET
    steps   = iif(expires_at <= ?1, 1, steps + 1),
    used    = iif(expires_at <= ?1, 0, used),
    outcome = iif(expires_at <= ?1, 0, outcome),
    expires_at = max(iif(expires_at <= ?1, 0, expires_at), ?2)
RETURNING steps, used
"""
_CHECKPOINT_EVERY = 2_000
_PURGE_EVERY = 20_000


class SqliteBudgetStore:
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-sqlite")
        self._loop_conn: sqlite3.Connection | None = None
        self._thread_conn: sqlite3.Connection | None = None
        self._writes = 0

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    async def _run(self, work: Work[T], *, transaction: bool = True) -> T:
        """Run `work` (in one transaction unless it is a single statement)."""
        if self._loop_conn is None:
            self._loop_conn = self._connect(busy_timeout_ms=0)
            self._loop_conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints: worker thread
        try:
            result = self._execute(self._loop_conn, work, transaction)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            # Another process holds the write lock: wait for it off the event loop.
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, self._on_thread, work, transaction)
        self._after_write()
        return result

    def _on_thread(self, work: Work[T], transaction: bool) -> T:
        if self._thread_conn is None:
            self._thread_conn = self._connect(busy_timeout_ms=10_000)
        return self._execute(self._thread_conn, work, transaction)

    @staticmethod
    def _execute(conn: sqlite3.Connection, work: Work[T], transaction: bool) -> T:
        if not transaction:
            return work(conn, time.time())
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn, time.time())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _after_write(self) -> None:
        self._writes += 1
        if self._writes % _CHECKPOINT_EVERY == 0:
            self._executor.submit(self._maintain, self._writes % _PURGE_EVERY == 0)

    def _maintain(self, purge: bool) -> None:
        if self._thread_conn is None:
            self._thread_conn = self._connect(busy_timeout_ms=10_000)
        if purge:
            self._execute(
                self._thread_conn,
                lambda conn, now: conn.execute(
                    "DELETE FROM counters WHERE expires_at <= ?", (now,)
                ),
                transaction=False,
            )
        self._thread_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- the store --------------------------------------------------------------------------

    async def begin_step(self, session_key: str, ttl_s: int) -> StepStart:
        def work(conn: sqlite3.Connection, now: float) -> StepStart:
            steps, used = conn.execute(_BEGIN_STEP, (now, now + ttl_s, session_key)).fetchone()
            return StepStart(steps - 1, used)

        return await self._run(work, transaction=False)

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        def work(conn: sqlite3.Connection, now: float) -> Reservation | None:
            for scope in scopes:
                row = conn.execute(
                    "SELECT used FROM counters WHERE key = ? AND expires_at > ?", (scope.key, now)
                ).fetchone()
                if (row[0] if row else 0) + cost > scope.limit:
                    return None
            for scope in scopes:
                conn.execute(_RESET_IF_EXPIRED, (now, now + scope.ttl_s, scope.key))
                conn.execute("UPDATE counters SET used = used + ? WHERE key = ?", (cost, scope.key))
            return Reservation(tuple(s.key for s in scopes), cost)

        return await self._run(work)

    async def refund(self, reservation: Reservation) -> None:
        def work(conn: sqlite3.Connection, now: float) -> None:
            conn.executemany(
                "UPDATE counters SET used = max(used - ?, 0) WHERE key = ? AND expires_at > ?",
                [(reservation.cost, key, now) for key in reservation.keys],
            )

        await self._run(work, transaction=False)

    async def used(self, key: str) -> int:
        info = await self._read(key)
        return info[1] if info else 0

    async def session(self, session_key: str) -> SessionInfo | None:
        info = await self._read(session_key)
        if info is None or info[0] == 0:
            return None
        return SessionInfo(info[0], info[1], bool(info[2]))

    async def _read(self, key: str) -> tuple[int, int, int] | None:
        def work(conn: sqlite3.Connection, now: float) -> tuple[int, int, int] | None:
            row = conn.execute(
                "SELECT steps, used, outcome FROM counters WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self._run(work, transaction=False)

    async def mark_outcome(self, session_key: str, ttl_s: int) -> bool:
        def work(conn: sqlite3.Connection, now: float) -> bool:
            conn.execute(_RESET_IF_EXPIRED, (now, now + ttl_s, session_key))
            changed = conn.execute(
                "UPDATE counters SET outcome = 1 WHERE key = ? AND outcome = 0", (session_key,)
            ).rowcount
            return bool(changed == 1)

        return await self._run(work)

    async def ping(self) -> bool:
        await self._run(lambda conn, now: conn.execute("SELECT 1").fetchone(), transaction=False)
        return True

    async def close(self) -> None:
        def shut_thread_conn() -> None:
            if self._thread_conn is not None:
                self._thread_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._thread_conn.close()
                self._thread_conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut_thread_conn)
        self._executor.shutdown(wait=True)
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
