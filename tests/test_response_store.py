"""The response store, one contract over every backend (memory, SQLite, Redis), and a chain
of responses moving between two replicas that share a redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.responses.store import ResponseStore, open_response_store
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


async def test_memory_and_sqlite_keep_the_newest_entries(tmp_path: Path) -> None:
    for kind in ("memory", "sqlite"):
        store = open_response_store(
            kind, sqlite_path=tmp_path / "bounded.db", redis_url="", max_entries=3
        )
        try:
            for i in range(300):  # SQLite sweeps every 256 writes
                await store.put("acme", f"resp_{i}", b"x", 60)
            assert await store.get("acme", "resp_299") == b"x"
            assert await store.get("acme", "resp_0") is None, kind
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
