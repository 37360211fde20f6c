"""Stored responses: what `previous_response_id` and `GET /v1/responses/{id}` read.

Kept in the budget store's backend, so every replica that shares budgets shares responses:
`memory` (one process), `sqlite` (the file `responses.db` beside `budget.db`; one process,
survives restarts), `redis` (many replicas). Each entry expires `ttl_s` after it was written;
the memory and SQLite stores also keep at most `max_entries`, dropping the oldest first
(Redis is bounded by the TTL and its own `maxmemory`). Keys are per tenant, so another
tenant's response is indistinguishable from none.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis

from router.budget.sqlite import connect

T = TypeVar("T")


class ResponseStore(Protocol):
    async def put(self, tenant: str, response_id: str, blob: bytes, ttl_s: int) -> None: ...

    async def get(self, tenant: str, response_id: str) -> bytes | None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...

    async def close(self) -> None: ...


def open_response_store(
    kind: str, *, sqlite_path: Path, redis_url: str, max_entries: int
) -> ResponseStore:
    if kind == "memory":
        return MemoryResponseStore(max_entries)
    if kind == "sqlite":
        return SqliteResponseStore(sqlite_path, max_entries)
    if kind == "redis":
        return RedisResponseStore(redis_url)
    raise ValueError(f"unknown response store {kind!r}")


def _key(tenant: str, response_id: str) -> str:
    return f"{tenant}/resp/{response_id}"


class MemoryResponseStore:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def put(self, tenant: str, response_id: str, blob: bytes, ttl_s: int) -> None:
        key = _key(tenant, response_id)
        self._entries.pop(key, None)
        self._entries[key] = (time.time() + ttl_s, blob)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        key = _key(tenant, response_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.time():
            del self._entries[key]
            return None
        return entry[1]

    async def delete(self, tenant: str, response_id: str) -> bool:
        found = await self.get(tenant, response_id) is not None
        self._entries.pop(_key(tenant, response_id), None)
        return found

    async def close(self) -> None:
        self._entries.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key        TEXT PRIMARY KEY,
    body       BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
"""
_PRUNE_EVERY = 256  # writes between sweeps of expired and surplus rows


class SqliteResponseStore:
    """One connection on one worker thread: SQLite calls never block the event loop."""

    def __init__(self, path: Path, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-db")
        self._db = self._pool.submit(self._open, path).result()
        self._writes = 0

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        return connect(path, _SCHEMA)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def put(self, tenant: str, response_id: str, blob: bytes, ttl_s: int) -> None:
        self._writes += 1
        prune = self._writes % _PRUNE_EVERY == 0
        await self._run(self._put, _key(tenant, response_id), blob, time.time() + ttl_s, prune)

    def _put(self, key: str, blob: bytes, expires_at: float, prune: bool) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, blob, expires_at)
        )
        if prune:
            self._db.execute("DELETE FROM responses WHERE expires_at <= ?", (time.time(),))
            self._db.execute(
                "DELETE FROM responses WHERE key IN (SELECT key FROM responses "
                "ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
                (self.max_entries,),
            )

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        row = await self._run(self._get, _key(tenant, response_id))
        return None if row is None else bytes(row[0])

    def _get(self, key: str) -> tuple[bytes] | None:
        cursor = self._db.execute(
            "SELECT body FROM responses WHERE key = ? AND expires_at > ?", (key, time.time())
        )
        row: tuple[bytes] | None = cursor.fetchone()
        return row

    async def delete(self, tenant: str, response_id: str) -> bool:
        deleted: bool = await self._run(self._delete, _key(tenant, response_id))
        return deleted

    def _delete(self, key: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM responses WHERE key = ? AND expires_at > ?", (key, time.time())
        )
        return cursor.rowcount > 0

    async def close(self) -> None:
        await self._run(self._db.close)
        self._pool.shutdown(wait=True)


class RedisResponseStore:
    def __init__(self, url: str, max_connections: int = 64) -> None:
        # As the budget store's: a burst beyond max_connections waits for a free connection.
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
        self._redis: Redis = Redis(connection_pool=pool)

    @staticmethod
    def _redis_key(tenant: str, response_id: str) -> str:
        return f"escalator:resp:{{{tenant}}}:{response_id}"

    async def put(self, tenant: str, response_id: str, blob: bytes, ttl_s: int) -> None:
        await self._redis.set(self._redis_key(tenant, response_id), blob, ex=ttl_s)

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        value = await self._redis.get(self._redis_key(tenant, response_id))
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return int(await self._redis.delete(self._redis_key(tenant, response_id))) > 0

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
