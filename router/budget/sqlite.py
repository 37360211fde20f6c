"""SQLite budget store: the embedded default, one process, surviving restarts.

The counters live in memory (the memory store's logic, so every operation is atomic and as
fast as a dict) and are written behind to SQLite: keys changed within `flush_interval_s`
are upserted together in one transaction on a worker thread. Counting a step never waits
for the disk, and SQLite runs a few hundred times a second, not once per step: on a busy
proxy a cold trip through SQLite costs more than the rest of the budget bookkeeping together.

A reservation is the exception: an intervention is sent on it, so it must outlive a crash.
`reserve` returns once the reservation is in the file, by a group commit: a write starts at
once if none is on its way, and the reservations that arrive while one is go together in
the next (a millisecond or two, against an intervention that takes a hundred or more). A
reservation the file could not take is undone and the error raised: no escalation is sent
on a unit a crash could forget.

What that trades: a crash (not a shutdown, which flushes) forgets at most the last
`flush_interval_s` of the changes nothing was sent on (step counts, refunds, outcome marks),
and one process owns the file, held by a lock on `<file>.lock` (a second process is refused
at start). Replicas share budgets through Redis.

Keys are loaded at start; past `max_cached_keys` the oldest unchanged keys leave memory and
are read back from SQLite when next used.

A session's entries (its steps' request ids, its claimed idempotency keys) are written behind
in the same transactions but not loaded: one missing from memory is looked up in the file
(feedback's path, not the step's). A step's request id → step row goes into a table ordered
by request id, and the proxy's request ids grow with time, so rows are appended: measured,
+2.5 µs of writer time per step, where a table ordered by session (scattered inserts) cost
+6 µs. The step → request id direction is kept in memory only, so it is unknown for a step
taken before a restart. Each row expires with its session as it was when written, so an
expired session's entries never answer for a new session of the same name.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from router.budget.base import BudgetStoreInUse, Reservation, Scope
from router.budget.memory import MemoryBudgetStore, _Counters

log = logging.getLogger("escalator.budget")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key        TEXT PRIMARY KEY,
    steps      INTEGER NOT NULL DEFAULT 0,
    used       INTEGER NOT NULL DEFAULT 0,
    outcome    INTEGER NOT NULL DEFAULT 0,
    expires_at REAL    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS step_requests (
    request_id TEXT PRIMARY KEY,
    key        TEXT    NOT NULL,
    step       INTEGER NOT NULL,
    expires_at REAL    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claimed_keys (
    key        TEXT NOT NULL,
    claim      TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, claim)
) WITHOUT ROWID;
"""
_UPSERT = """
INSERT INTO counters (key, steps, used, outcome, expires_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    steps = excluded.steps, used = excluded.used, outcome = excluded.outcome,
    expires_at = excluded.expires_at
"""
_SELECT = "SELECT key, steps, used, outcome, expires_at FROM counters WHERE expires_at > ?"
_PUT_STEP = "INSERT OR REPLACE INTO step_requests VALUES (?, ?, ?, ?)"
_SELECT_STEP = "SELECT step FROM step_requests WHERE request_id = ? AND key = ? AND expires_at > ?"
_PUT_CLAIM = "INSERT OR REPLACE INTO claimed_keys VALUES (?, ?, ?, ?)"
_SELECT_CLAIM = "SELECT value FROM claimed_keys WHERE key = ? AND claim = ? AND expires_at > ?"
_PURGE_EVERY_S = 3_600.0
_REPORT_FAILURE_EVERY_S = 60.0

Row = tuple[str, int, int, int, float]
StepRow = tuple[str, str, int, float]  # request id, session key, step, expires_at
ClaimRow = tuple[str, str, str, float]  # session key, idempotency key, value, expires_at
Waiters = list[asyncio.Future[None]]


class ReservationNotWritten(RuntimeError):
    """The file did not take a reservation: it was undone, and nothing may be sent on it."""


class SqliteBudgetStore(MemoryBudgetStore):
    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval_s: float = 0.01,
        max_cached_keys: int = 500_000,
    ) -> None:
        super().__init__()
        self._path = Path(path)
        self._flush_interval_s = flush_interval_s
        self._max_cached_keys = max_cached_keys
        self._lock_fd = _lock(self._path)
        self._conn = _connect(self._path)  # the writer thread's
        self._reader = _connect(self._path)  # the event loop's: loading, and keys past the cache
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-sqlite")
        self._dirty: dict[str, _Counters] = {}
        self._dirty_steps: list[StepRow] = []
        self._dirty_claims: list[ClaimRow] = []
        self._waiting: Waiters = []  # reservations waiting for the next write to land
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_flush: Future[None] | None = None
        self._failing_since: float | None = None
        self._failure_reported_at = float("-inf")
        self._purged_at = time.monotonic()
        self._evict_when_written = False
        self._complete = self._load()  # True while every unexpired key of the file is in memory

    # -- memory in front of the file --------------------------------------------------------

    def _load(self) -> bool:
        rows = self._reader.execute(f"{_SELECT} LIMIT ?", (time.time(), self._max_cached_keys + 1))
        for key, steps, used, outcome, expires_at in rows:
            self._keys[key] = _Counters(steps, used, bool(outcome), expires_at)
        if len(self._keys) > self._max_cached_keys:
            self._keys.popitem()
            return False
        return True

    def _get(self, key: str, now: float) -> _Counters | None:
        if not self._complete and key not in self._keys:  # it may have left memory: read back
            row = self._reader.execute(f"{_SELECT} AND key = ?", (now, key)).fetchone()
            if row is not None:
                self._keys[key] = _Counters(row[1], row[2], bool(row[3]), row[4])
        return super()._get(key, now)

    def _sweep(self, now: float) -> None:
        super()._sweep(now)
        self._evict()

    def _evict(self) -> None:
        self._evict_when_written = False
        excess = len(self._keys) - self._max_cached_keys
        if excess <= 0:
            return
        if not self._written_out():
            # Nothing leaves while a write is on its way (the file must hold what a later
            # miss reads back): the keys leave once it has landed.
            self._evict_when_written = True
            return
        # The oldest keys first. A key with unwritten changes stays.
        for key in [k for k in self._keys if k not in self._dirty][:excess]:
            del self._keys[key]
        self._complete = False

    def _written(self, key: str, counters: _Counters) -> None:
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self._flush_interval_s, self._flush)
        self._dirty[key] = counters

    # Both are followed by `_written(key, ...)`: the key stays in memory until all is out.
    def _request_written(self, key: str, request_id: str, step: int, expires_at: float) -> None:
        self._dirty_steps.append((request_id, key, step, expires_at))

    def _claim_written(self, key: str, claim: str, value: str, expires_at: float) -> None:
        self._dirty_claims.append((key, claim, value, expires_at))

    def _stored_step(self, key: str, request_id: str, now: float) -> int | None:
        row = self._reader.execute(_SELECT_STEP, (request_id, key, now)).fetchone()
        return int(row[0]) if row is not None else None

    def _stored_claim(self, key: str, claim: str, now: float) -> str | None:
        row = self._reader.execute(_SELECT_CLAIM, (key, claim, now)).fetchone()
        return str(row[0]) if row is not None else None

    # -- writing behind ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the changed keys' current counters to the writer thread, with the
        reservations waiting for them."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        waiting, self._waiting = self._waiting, []
        if not (self._dirty or self._dirty_steps or self._dirty_claims):
            _release(waiting, None)
            return
        rows: list[Row] = [
            (key, c.steps, c.used, int(c.outcome), c.expires_at) for key, c in self._dirty.items()
        ]
        steps, claims = self._dirty_steps, self._dirty_claims
        self._dirty, self._dirty_steps, self._dirty_claims = {}, [], []
        loop = asyncio.get_running_loop()
        self._last_flush = self._executor.submit(self._write, rows, steps, claims)

        def report(done: Future[None]) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._flushed, done, rows, steps, claims, waiting)

        self._last_flush.add_done_callback(report)

    def _written_out(self) -> bool:
        return self._last_flush is None or self._last_flush.done()

    def _write(self, rows: list[Row], steps: list[StepRow], claims: list[ClaimRow]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(_UPSERT, rows)
            self._conn.executemany(_PUT_STEP, steps)
            self._conn.executemany(_PUT_CLAIM, claims)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        if time.monotonic() - self._purged_at > _PURGE_EVERY_S:
            self._purged_at = time.monotonic()
            now = time.time()
            self._conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            self._conn.execute("DELETE FROM step_requests WHERE expires_at <= ?", (now,))
            self._conn.execute("DELETE FROM claimed_keys WHERE expires_at <= ?", (now,))

    def _flushed(
        self,
        done: Future[None],
        rows: Iterable[Row],
        steps: list[StepRow],
        claims: list[ClaimRow],
        waiting: Waiters,
    ) -> None:
        exc = done.exception()
        _release(waiting, exc)
        if exc is None:
            self._failing_since = None
            if self._written_out() and self._waiting:
                self._flush()  # the group that gathered while this was written
            if self._evict_when_written:
                self._evict()
            return
        # Keep the changes and try again: the counters in memory are still the truth.
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failure_reported_at > _REPORT_FAILURE_EVERY_S:
            self._failure_reported_at = now
            log.error("budget store: writing to %s failed, retrying: %s", self._path, exc)
        self._dirty_steps[:0] = steps  # before any newer rows, which must win
        self._dirty_claims[:0] = claims
        for key, *_ in rows:
            counters = self._keys.get(key)
            if counters is not None and key not in self._dirty:
                self._written(key, counters)

    # -- the store --------------------------------------------------------------------------

    async def reserve(self, scopes: Sequence[Scope], cost: int) -> Reservation | None:
        """Take `cost` from every scope, returning once the reservation is in the file."""
        reservation = await super().reserve(scopes, cost)
        if reservation is None or not reservation.keys:  # refused, or nothing kept to write
            return reservation
        written = asyncio.get_running_loop().create_future()
        self._waiting.append(written)
        if self._written_out():  # no write on its way: start one now
            self._flush()
        try:
            await written
        except BaseException:  # not written, or the step was cancelled meanwhile
            await super().refund(reservation)
            raise
        return reservation

    async def ping(self) -> bool:
        """Ready while the file takes writes (a failing disk makes the replica not ready)."""
        if self._failing_since is not None:
            return False
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.execute, "SELECT 1")
        return True

    async def close(self) -> None:
        """Write every change, checkpoint the WAL, and release the file."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush()
        loop = asyncio.get_running_loop()
        if self._last_flush is not None:
            try:
                await asyncio.wrap_future(self._last_flush, loop=loop)
            except Exception as exc:  # the counters are lost with this process: say so
                log.error("budget store: the last changes could not be written: %s", exc)
        await loop.run_in_executor(self._executor, self._shut)
        self._executor.shutdown(wait=True)
        os.close(self._lock_fd)
        self._keys.clear()

    def _shut(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()
        self._reader.close()


def _release(waiting: Waiters, failure: BaseException | None) -> None:
    """Answer the reservations that waited for a write: landed, or failed."""
    for written in waiting:
        if written.done():  # its step was cancelled
            continue
        if failure is None:
            written.set_result(None)
        else:
            written.set_exception(ReservationNotWritten(f"the budget file failed: {failure}"))


def _lock(path: Path) -> int:
    """Hold `<path>.lock` for the life of the store: one process owns the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BudgetStoreInUse(
            f"the SQLite budget store {path} is in use by another Escalator process; one "
            'process owns a SQLite file (replicas share budgets with budget_store = "redis")'
        ) from None
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    return connect(path, _SCHEMA)


def connect(path: Path, schema: str, timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), write-ahead logged, with
    `schema` created; usable from any one thread at a time. The proxy's other SQLite files
    (stored responses, tenants) open theirs the same way."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout_s)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn
