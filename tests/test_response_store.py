"""The response store, one contract over every backend (memory, SQLite, Redis), and a chain
of responses moving between two replicas that share a redis-server."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.responses.store import (
    MemoryResponseStore,
    RedisResponseStore,
    ResponseStore,
    SqliteResponseStore,
    open_response_store,
)
from tests.servers import KEYS, RedisServer
from tests.test_replicas import Replicas, replicas  # noqa: F401  (a fixture)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseStore]:
    redis_url = ""
    if request.param == "redis":
        from redis.asyncio import Redis

        server: RedisServer = request.getfixturevalue("redis_server")
        redis_url = server.url
        client = Redis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
    opened = open_response_store(
        request.param, sqlite_path=tmp_path / "responses.db", redis_url=redis_url, max_entries=3
    )
    yield opened
    await opened.close()


async def test_a_response_is_kept_per_tenant_until_deleted(store: ResponseStore) -> None:
    await store.put("acme", "resp_1", b'{"a": 1}', 60)
    assert await store.get("acme", "resp_1") == b'{"a": 1}'
    assert await store.get("globex", "resp_1") is None  # another tenant's is none of theirs
    assert not await store.delete("globex", "resp_1")
    assert await store.delete("acme", "resp_1")
    assert await store.get("acme", "resp_1") is None
    assert not await store.delete("acme", "resp_1")


async def test_a_response_expires(store: ResponseStore) -> None:
    await store.put("acme", "resp_short", b"x", 1)
    assert await store.get("acme", "resp_short") == b"x"
    await asyncio.sleep(1.1)
    assert await store.get("acme", "resp_short") is None
    assert not await store.delete("acme", "resp_short")


async def held(store: ResponseStore, tenant: str) -> int:
    """How many of the tenant's responses the backend holds, expired and evicted ones
    included (what it reads back can hide a record it failed to delete)."""
    if isinstance(store, MemoryResponseStore):
        return len(store._tenants.get(tenant, {}))
    if isinstance(store, SqliteResponseStore):
        query = "SELECT count(*) FROM stored_responses WHERE tenant = ?"
        (count,) = await store._run(lambda: store._db.execute(query, (tenant,)).fetchone())
        return int(count)
    assert isinstance(store, RedisResponseStore)
    keys = [key async for key in store._redis.scan_iter(f"escalator:resp:{{{tenant}}}:*")]
    assert await store._redis.zcard(f"escalator:resps:{{{tenant}}}") <= store.max_entries
    return len(keys)


async def test_a_tenant_keeps_its_newest_responses_up_to_the_bound(store: ResponseStore) -> None:
    for i in range(7):
        await store.put("acme", f"resp_{i}", b"x", 60)
        kept = [j for j in range(i + 1) if await store.get("acme", f"resp_{j}") is not None]
        assert kept == list(range(max(0, i - 2), i + 1))  # the newest three, after every write
        assert await held(store, "acme") == len(kept)
    await store.put("acme", "resp_4", b"again", 60)  # written again: now the newest
    await store.put("acme", "resp_7", b"x", 60)
    assert await store.get("acme", "resp_5") is None
    assert await store.get("acme", "resp_4") == b"again"
    # the bound is per tenant: another tenant's writes evict none of acme's
    for i in range(5):
        await store.put("globex", f"resp_{i}", b"g", 60)
    assert await held(store, "globex") == 3 and await held(store, "acme") == 3
    assert [await store.get("acme", f"resp_{j}") is not None for j in (4, 6, 7)] == [True] * 3
    # a deleted response leaves room, and writes at once keep the bound
    assert await store.delete("acme", "resp_7")
    assert await held(store, "acme") == 2
    await asyncio.gather(*(store.put("acme", f"burst_{i}", b"b", 60) for i in range(40)))
    assert await held(store, "acme") == 3


async def test_sqlite_keeps_the_bound_across_sweeps_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "bounded.db"
    store = open_response_store("sqlite", sqlite_path=path, redis_url="", max_entries=3)
    try:
        await store.put("globex", "resp_short", b"x", 1)
        await asyncio.sleep(1.1)
        for i in range(300):  # past a sweep of expired rows (every 256 writes)
            await store.put("acme", f"resp_{i}", b"x", 60)
            assert await held(store, "acme") == min(i + 1, 3)
        assert await held(store, "globex") == 0  # swept, and no longer counted:
        for i in range(3):
            await store.put("globex", f"resp_{i}", b"x", 60)
        assert await held(store, "globex") == 3
    finally:
        await store.close()
    reopened = open_response_store("sqlite", sqlite_path=path, redis_url="", max_entries=3)
    try:
        await reopened.put("acme", "resp_300", b"x", 60)
        assert await held(reopened, "acme") == 3
        assert await reopened.get("acme", "resp_297") is None
    finally:
        await reopened.close()


async def test_sqlite_moves_responses_stored_before_the_per_tenant_bound(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, body BLOB, expires_at REAL)")
        rows = [(f"acme/resp/resp_{i}", b"old", time.time() + 60) for i in range(3)]
        old.executemany("INSERT INTO responses VALUES (?, ?, ?)", rows)
    old.close()
    store = open_response_store("sqlite", sqlite_path=path, redis_url="", max_entries=2)
    try:
        assert await store.get("acme", "resp_2") == b"old"
        assert await held(store, "acme") == 3  # as it was, until a write evicts
        await store.put("acme", "resp_new", b"new", 60)
        assert await held(store, "acme") == 2 and await store.get("acme", "resp_2") == b"old"
    finally:
        await store.close()


async def test_sqlite_keeps_responses_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    first = open_response_store("sqlite", sqlite_path=path, redis_url="", max_entries=10)
    await first.put("acme", "resp_kept", b"kept", 60)
    await first.close()
    second = open_response_store("sqlite", sqlite_path=path, redis_url="", max_entries=10)
    try:
        assert await second.get("acme", "resp_kept") == b"kept"
    finally:
        await second.close()


@pytest.mark.redis
def test_a_chain_moves_between_replicas(replicas: Replicas) -> None:  # noqa: F811
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    ids: list[str] = []
    with httpx.Client(headers=headers, timeout=10) as client:
        for turn in range(4):
            previous = ids[-1] if ids else None
            body = {"model": "never", "input": f"turn {turn}", "previous_response_id": previous}
            response = client.post(f"{replicas[turn % 2]}/v1/responses", json=body)
            assert response.status_code == 200, response.text
            ids.append(response.json()["id"])
        last = ids[-1]
        assert client.get(f"{replicas[1]}/v1/responses/{last}").json()["id"] == last
        listed = client.get(f"{replicas[0]}/v1/responses/{last}/input_items").json()
        users = [i["content"][0]["text"] for i in listed["data"] if i.get("role") == "user"]
        assert users == ["turn 3", "turn 2", "turn 1", "turn 0"]
        # one session, named by the chain's first response, counted on both replicas
        assert client.get(f"{replicas[1]}/v1/sessions/{ids[0]}").json()["steps"] == 4
        assert client.delete(f"{replicas[0]}/v1/responses/{last}").status_code == 200
        assert client.get(f"{replicas[1]}/v1/responses/{last}").status_code == 404


def test_a_long_conversation_is_stored_compressed() -> None:
    from server.responses.service import pack, unpack

    turn = b'{"type":"message","role":"user","content":"Take the key and open the door."},'
    record = b'{"input":[' + turn * 200 + b"{}]}"
    packed = pack(record)
    assert len(packed) < len(record) / 5 and unpack(packed) == record
    assert pack(b'{"input":[]}') == b'{"input":[]}'  # a short record is kept as it is
