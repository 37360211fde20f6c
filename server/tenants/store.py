"""The tenant store: tenants as documents, a version counter, and usage counts by day.

Kept in the budget store's backend, so every replica that shares budgets shares tenants:
`memory` (one process), `sqlite` (the file `tenants.db` beside `budget.db`; it survives
restarts, and several processes may open it), `redis` (many replicas). Every change is a
compare-and-swap of one tenant's document that also bumps the version, atomically; a replica
polls the version (one small read) and reloads the documents only when it moved
(server/tenants/directory.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis

from router.budget.sqlite import connect
from server.tenants.usage import UsageCounts

T = TypeVar("T")
Usage = Mapping[tuple[str, str], UsageCounts]  # (day, tenant) → counts


class TenantStore(Protocol):
    async def version(self) -> int:
        """A number that changes with every change to any tenant."""
        ...

    async def load(self) -> tuple[int, dict[str, bytes]]:
        """Every tenant's document, and the version they are at."""
        ...

    async def get(self, name: str) -> bytes | None: ...

    async def swap(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        """Replace the document of `name` with `new` (None deletes it) if it is still
        `expected` (None: absent), and bump the version; False if it was not."""
        ...

    async def add_usage(self, usage: Usage, ttl_s: int) -> None: ...

    async def usage(self, tenant: str, day: str) -> UsageCounts: ...

    async def close(self) -> None: ...


def open_tenant_store(kind: str, *, sqlite_path: Path, redis_url: str) -> TenantStore:
    if kind == "memory":
        return MemoryTenantStore()
    if kind == "sqlite":
        return SqliteTenantStore(sqlite_path)
    if kind == "redis":
        return RedisTenantStore(redis_url)
    raise ValueError(f"unknown tenant store {kind!r}")


class MemoryTenantStore:
    def __init__(self) -> None:
        self._docs: dict[str, bytes] = {}
        self._version = 0
        self._usage: dict[tuple[str, str], UsageCounts] = {}

    async def version(self) -> int:
        return self._version

    async def load(self) -> tuple[int, dict[str, bytes]]:
        return self._version, dict(self._docs)

    async def get(self, name: str) -> bytes | None:
        return self._docs.get(name)

    async def swap(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        if self._docs.get(name) != expected:
            return False
        if new is None:
            del self._docs[name]
        else:
            self._docs[name] = new
        self._version += 1
        return True

    async def add_usage(self, usage: Usage, ttl_s: int) -> None:
        for key, counts in usage.items():
            self._usage.setdefault(key, UsageCounts()).add(counts)

    async def usage(self, tenant: str, day: str) -> UsageCounts:
        counts = self._usage.get((day, tenant), UsageCounts())
        return UsageCounts(counts.steps, counts.escalated, counts.units)

    async def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenants_version (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER);
INSERT OR IGNORE INTO tenants_version VALUES (0, 0);
CREATE TABLE IF NOT EXISTS usage (
    day        TEXT    NOT NULL,
    tenant     TEXT    NOT NULL,
    steps      INTEGER NOT NULL,
    escalated  INTEGER NOT NULL,
    units      INTEGER NOT NULL,
    expires_at REAL    NOT NULL,
    PRIMARY KEY (day, tenant)
) WITHOUT ROWID;
"""
_ADD_USAGE = """
INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, tenant) DO UPDATE SET
    steps = steps + excluded.steps, escalated = escalated + excluded.escalated,
    units = units + excluded.units, expires_at = excluded.expires_at
"""


class SqliteTenantStore:
    """One connection on one worker thread. Unlike the budget file, the tenants file takes
    writers from several processes (each change is one short IMMEDIATE transaction)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenants-db")
        self._db = self._pool.submit(connect, path, _SCHEMA).result()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def version(self) -> int:
        return await self._run(self._version)

    def _version(self) -> int:
        row = self._db.execute("SELECT n FROM tenants_version").fetchone()
        return int(row[0])

    async def load(self) -> tuple[int, dict[str, bytes]]:
        return await self._run(self._load)

    def _load(self) -> tuple[int, dict[str, bytes]]:
        with self._transaction("BEGIN"):
            docs = {name: bytes(doc) for name, doc in self._db.execute("SELECT * FROM tenants")}
            return self._version(), docs

    async def get(self, name: str) -> bytes | None:
        return await self._run(self._get, name)

    def _get(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT doc FROM tenants WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    async def swap(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        return await self._run(self._swap, name, expected, new)

    def _swap(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        with self._transaction("BEGIN IMMEDIATE"):
            if self._get(name) != expected:
                return False
            if new is None:
                self._db.execute("DELETE FROM tenants WHERE name = ?", (name,))
            else:
                self._db.execute("INSERT OR REPLACE INTO tenants VALUES (?, ?)", (name, new))
            self._db.execute("UPDATE tenants_version SET n = n + 1")
            return True

    async def add_usage(self, usage: Usage, ttl_s: int) -> None:
        await self._run(self._add_usage, dict(usage), ttl_s)

    def _add_usage(self, usage: Usage, ttl_s: int) -> None:
        now = time.time()
        with self._transaction("BEGIN IMMEDIATE"):
            self._db.executemany(
                _ADD_USAGE,
                [
                    (day, tenant, c.steps, c.escalated, c.units, now + ttl_s)
                    for (day, tenant), c in usage.items()
                ],
            )
            self._db.execute("DELETE FROM usage WHERE expires_at <= ?", (now,))

    async def usage(self, tenant: str, day: str) -> UsageCounts:
        return await self._run(self._usage, tenant, day)

    def _usage(self, tenant: str, day: str) -> UsageCounts:
        row = self._db.execute(
            "SELECT steps, escalated, units FROM usage WHERE day = ? AND tenant = ?",
            (day, tenant),
        ).fetchone()
        return UsageCounts(*row) if row else UsageCounts()

    def _transaction(self, begin: str) -> _Transaction:
        return _Transaction(self._db, begin)

    async def close(self) -> None:
        await self._run(self._db.close)
        self._pool.shutdown(wait=True)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, begin: str) -> None:
        self._db = db
        self._begin = begin

    def __enter__(self) -> None:
        self._db.execute(self._begin)

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


# KEYS: documents hash, version. ARGV: name, expected ('' = absent), new ('' = delete).
_SWAP = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('INCR', KEYS[2])
return 1
"""


class RedisTenantStore:
    """Under `escalator:tenants:`, apart from the budget's counters: the documents in one
    hash and the version beside it (one Cluster hash tag, so the swap script may touch both),
    and usage counts in a hash per tenant and day."""

    def __init__(
        self, url: str, prefix: str = "escalator:tenants", max_connections: int = 8
    ) -> None:
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
        self._redis: Redis = Redis(connection_pool=pool)
        self._docs = f"{prefix}:{{directory}}:docs"
        self._version_key = f"{prefix}:{{directory}}:version"
        self._prefix = prefix
        self._swap = self._redis.register_script(_SWAP)

    def _usage_key(self, tenant: str, day: str) -> str:
        return f"{self._prefix}:usage:{{{tenant}}}:{day}"

    async def version(self) -> int:
        return int(await self._redis.get(self._version_key) or 0)

    async def load(self) -> tuple[int, dict[str, bytes]]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._version_key)
            pipe.hgetall(self._docs)
            version, docs = await pipe.execute()
        return int(version or 0), {_text(k): _bytes(v) for k, v in docs.items()}

    async def get(self, name: str) -> bytes | None:
        doc = await self._redis.hget(self._docs, name)
        return None if doc is None else _bytes(doc)

    async def swap(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        args: list[bytes | str] = [name, expected or b"", new or b""]
        return bool(await self._swap(keys=[self._docs, self._version_key], args=args))

    async def add_usage(self, usage: Usage, ttl_s: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for (day, tenant), counts in usage.items():
                key = self._usage_key(tenant, day)
                pipe.hincrby(key, "steps", counts.steps)
                pipe.hincrby(key, "escalated", counts.escalated)
                pipe.hincrby(key, "units", counts.units)
                pipe.expire(key, ttl_s)
            await pipe.execute()

    async def usage(self, tenant: str, day: str) -> UsageCounts:
        values = await self._redis.hmget(
            self._usage_key(tenant, day), ["steps", "escalated", "units"]
        )
        steps, escalated, units = (int(v or 0) for v in values)
        return UsageCounts(steps, escalated, units)

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
