"""Requests without a session id leave nothing behind in the budget store.

Each such request is a session of one step, named after its request id; keeping a counter
for it (7 days by default) grew the memory store by 16.6 MB per 60,000 requests and the
SQLite file by a row each. A one-step session needs no counter beyond the tenant's window:
it still gets its full budget C for its one step, and the tenant's daily cap still counts it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from server.settings import hash_api_key
from tests.helpers import user
from tests.servers import KEYS, RedisServer, RunningProxy

StartProxy = Callable[..., RunningProxy]
C = 2
REQUESTS = 20


def kept_keys(proxy: RunningProxy, kind: str, redis_url: str) -> set[str]:
    """The budget keys the proxy's store holds, in the store's own names."""
    if kind == "redis":
        client = redis.Redis.from_url(redis_url)
        names = {name.decode() for name in client.scan_iter("escalator:*")}
        # The tenant directory's documents and usage are not budget keys.
        names = {name for name in names if not name.startswith("escalator:tenants:")}
        client.close()
        return {name.replace("escalator:{acme}:", "acme/") for name in names}
    return set(proxy.state.store._keys)


def keys_in_file(path: Path) -> set[str]:
    with sqlite3.connect(path) as reader:
        return {row[0] for row in reader.execute("SELECT key FROM counters")}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_requests_without_a_session_id_keep_no_session_in_the_store(
    start_proxy: StartProxy, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    redis_url = ""
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis_url = server.url
        redis.Redis.from_url(redis_url).flushdb()
    acme = {
        "api_keys": [hash_api_key(KEYS["acme"])],
        "interventions_per_session": C,
        "interventions_per_day": 1000,
    }
    proxy = start_proxy(
        storage={"dir": str(tmp_path / "data"), "budget_store": kind, "redis_url": redis_url},
        tenants={"acme": acme},
    )
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as client:
        answers = [
            client.post("/v1/chat/completions", json={"model": "always", "messages": user()})
            for _ in range(REQUESTS)
        ]
        named = client.post(
            "/v1/chat/completions",
            json={"model": "always", "messages": user()},
            headers={"x-session-id": "ep-1"},
        )
        # Every one-step session had its budget for its step, and the day counted each.
        assert [a.headers["x-escalator-action"] for a in answers] == ["strong"] * REQUESTS
        assert {a.headers["x-escalator-budget-remaining"] for a in answers} == {str(C - 1)}
        assert named.headers["x-escalator-action"] == "strong"
        one_step = answers[0].headers["x-request-id"]
        assert client.get(f"/v1/sessions/{one_step}").status_code == 404
        assert client.get("/v1/sessions/ep-1").json()["interventions_used"] == 1

    day = f"acme/day/{time.strftime('%Y-%m-%d', time.gmtime())}"
    assert kept_keys(proxy, kind, redis_url) == {"acme/s/ep-1", day}
    if kind == "sqlite":
        proxy.stop()  # every change written
        assert keys_in_file(tmp_path / "data" / "budget.db") == {"acme/s/ep-1", day}
