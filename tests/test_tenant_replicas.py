"""Tenants changed on one replica reach the others within a second: two proxies on one real
redis-server; two tenant directories on one SQLite file; and what a restart keeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from server.errors import AuthenticationFailed
from server.settings import hash_api_key, validate_settings
from server.tenancy import Tenancy
from server.tenants.directory import TenantDirectory
from server.tenants.store import SqliteTenantStore
from server.tenants.usage import UsageTally
from tests.fake_upstream import FakeUpstream
from tests.helpers import metric, user, wait_until
from tests.servers import KEYS, RedisServer, RunningProxy, proxy_config

ADMIN_KEY = "admin-replicas-test"
ADMIN_ENV = "ESCALATOR_REPLICAS_TEST_ADMIN_KEY"
WITHIN_S = 1.0  # the promise: every replica sees a change within a second
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def status_of_step(url: str, key: str, model: str = "never") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": user()},
        headers={"authorization": f"Bearer {key}", "x-session-id": "replicated"},
        timeout=10,
    )


def seen_within(check: Callable[[], bool], since: float) -> float:
    """Seconds from `since` until `check()` held; fails past WITHIN_S."""
    while not check():
        if time.monotonic() - since > WITHIN_S:
            raise AssertionError(f"not seen within {WITHIN_S}s")
        time.sleep(0.01)
    return time.monotonic() - since


@pytest.fixture
def two_replicas(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[RunningProxy, RunningProxy]]:
    redis.Redis.from_url(redis_server.url).flushdb()
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    proxies = [
        RunningProxy(
            proxy_config(
                fake_upstream.base_url,
                tmp_path / f"data-{i}",
                server={"admin_key_env": ADMIN_ENV},
                storage={"budget_store": "redis", "redis_url": redis_server.url},
            )
        ).start()
        for i in range(2)
    ]
    yield proxies[0], proxies[1]
    for proxy in proxies:
        proxy.stop()


@pytest.mark.redis
def test_changes_on_one_replica_reach_the_other_within_a_second(
    two_replicas: tuple[RunningProxy, RunningProxy],
) -> None:
    a, b = two_replicas
    with httpx.Client(headers=ADMIN, timeout=10) as admin:
        assert admin.post(f"{a.url}/admin/tenants", json={"name": "wayne"}).status_code == 201
        key = admin.post(f"{a.url}/admin/tenants/wayne/keys").json()
        issued = time.monotonic()
        assert status_of_step(a.url, key["key"]).status_code == 200  # at once where made
        seen_within(lambda: status_of_step(b.url, key["key"]).status_code == 200, issued)

        admin.patch(f"{b.url}/admin/tenants/wayne", json={"interventions_per_session": 0})
        changed = time.monotonic()
        seen_within(
            lambda: (
                status_of_step(a.url, key["key"], "always").headers["x-escalator-action"] == "base"
            ),
            changed,
        )

        admin.delete(f"{b.url}/admin/tenants/wayne/keys/{key['id']}")
        revoked = time.monotonic()
        assert status_of_step(b.url, key["key"]).status_code == 401
        seen_within(lambda: status_of_step(a.url, key["key"]).status_code == 401, revoked)

        # The tenant's usage is counted across replicas.
        fresh = admin.post(f"{a.url}/admin/tenants/wayne/keys").json()["key"]
        seen_within(lambda: status_of_step(b.url, fresh).status_code == 200, time.monotonic())
        status_of_step(a.url, fresh)
        wait_until(
            lambda: admin.get(f"{a.url}/admin/tenants/wayne/usage").json()["steps"] >= 5,
            timeout_s=WITHIN_S,
        )

        admin.delete(f"{a.url}/admin/tenants/wayne")
        deleted = time.monotonic()
        seen_within(lambda: status_of_step(b.url, fresh).status_code == 401, deleted)
        assert admin.get(f"{b.url}/admin/tenants/wayne").status_code == 404


@pytest.mark.redis
def test_a_file_tenant_removed_from_the_file_is_removed_at_start(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server.url).flushdb()
    storage = {"budget_store": "redis", "redis_url": redis_server.url}
    first = RunningProxy(proxy_config(fake_upstream.base_url, tmp_path, storage=storage)).start()
    assert status_of_step(first.url, KEYS["globex"]).status_code == 200
    first.stop()
    config = proxy_config(fake_upstream.base_url, tmp_path, storage=storage)
    del config["tenants"]["globex"]
    second = RunningProxy(config).start()
    try:
        assert status_of_step(second.url, KEYS["globex"]).status_code == 401
        assert status_of_step(second.url, KEYS["acme"]).status_code == 200
    finally:
        second.stop()


def directory(path: Path, tenants: dict[str, Any]) -> TenantDirectory:
    settings = validate_settings({"tenants": tenants})
    store = SqliteTenantStore(path)
    return TenantDirectory(settings, store, _NoBudgets(), Tenancy(settings), UsageTally())


class _NoBudgets:
    async def used(self, key: str) -> int:
        return 0


async def test_two_directories_on_one_sqlite_file_see_each_others_changes(
    tmp_path: Path,
) -> None:
    """A SQLite budget file has one owner process, but the tenants file takes several."""
    path = tmp_path / "tenants.db"
    file_tenants = {"acme": {"api_keys": [hash_api_key(KEYS["acme"])]}}
    first, second = directory(path, file_tenants), directory(path, file_tenants)
    await first.start()
    await second.start()
    try:
        await first.create("wayne", second.records["acme"].limits)
        key, record = await first.issue_key("wayne")
        changed = time.monotonic()
        while True:
            try:
                assert second.tenancy.authenticate(f"Bearer {key}").tenant == "wayne"
                break
            except AuthenticationFailed:
                assert time.monotonic() - changed < WITHIN_S
                await asyncio.sleep(0.01)
        await second.revoke_key("wayne", record.id)
        revoked = time.monotonic()
        while True:
            try:
                first.tenancy.authenticate(f"Bearer {key}")
            except AuthenticationFailed:
                break
            assert time.monotonic() - revoked < WITHIN_S
            await asyncio.sleep(0.01)
    finally:
        await first.close()
        await second.close()


def test_runtime_tenants_survive_a_restart_and_the_file_wins_for_its_own(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)

    def start(acme_c: int) -> RunningProxy:
        tenants = proxy_config("", tmp_path)["tenants"]
        tenants["acme"] = {**tenants["acme"], "interventions_per_session": acme_c}
        config = proxy_config(
            fake_upstream.base_url,
            tmp_path / "data",
            server={"admin_key_env": ADMIN_ENV},
            storage={"budget_store": "sqlite"},
            tenants=tenants,
        )
        return RunningProxy(config).start()

    proxy = start(acme_c=2)
    with httpx.Client(headers=ADMIN, timeout=10) as admin:
        admin.post(f"{proxy.url}/admin/tenants", json={"name": "wayne"})
        key = admin.post(f"{proxy.url}/admin/tenants/wayne/keys").json()["key"]
        acme_key = admin.post(f"{proxy.url}/admin/tenants/acme/keys").json()["key"]
        admin.patch(f"{proxy.url}/admin/tenants/acme", json={"interventions_per_session": 9})
        proxy.stop()

        proxy = start(acme_c=4)  # the file changed while the proxy was down
        try:
            assert status_of_step(proxy.url, key).status_code == 200
            acme = admin.get(f"{proxy.url}/admin/tenants/acme").json()
            assert acme["source"] == "file"
            assert acme["interventions_per_session"] == 4  # the file's, not the API's 9
            assert status_of_step(proxy.url, acme_key).status_code == 200  # issued: kept
            assert status_of_step(proxy.url, KEYS["acme"]).status_code == 200
            wayne = admin.get(f"{proxy.url}/admin/tenants/wayne").json()
            assert wayne["source"] == "api"
        finally:
            proxy.stop()


def test_a_tenant_store_that_is_down_leaves_the_last_tenants_serving(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on port 1: the file's keys still authenticate (the step itself fails
    on the budget store, a 503), admin calls are 503 envelopes, and the metrics say so."""
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    config = proxy_config(
        fake_upstream.base_url,
        tmp_path,
        server={"admin_key_env": ADMIN_ENV},
        storage={"budget_store": "redis", "redis_url": "redis://127.0.0.1:1/0"},
    )
    proxy = RunningProxy(config).start()
    try:
        assert status_of_step(proxy.url, KEYS["acme"]).status_code == 503
        assert status_of_step(proxy.url, "sk-unknown").status_code == 401
        answer = httpx.get(f"{proxy.url}/admin/tenants", headers=ADMIN)
        assert answer.status_code == 503 and answer.json()["error"]["code"]
        with httpx.Client(base_url=proxy.url) as client:
            assert metric(client, "escalator_tenant_store_errors_total") >= 1
            assert metric(client, "escalator_tenants_checked_timestamp_seconds") == 0
    finally:
        proxy.stop()


class _SwallowsCancellation(SqliteTenantStore):
    """A store client that turns the cancellation of a call it is in into its own error."""

    async def version(self) -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed") from None
        return 0


async def test_a_directory_closes_though_its_store_swallowed_the_poll_cancellation(
    tmp_path: Path,
) -> None:
    settings = validate_settings({"tenants": {"acme": {"api_keys": [hash_api_key(KEYS["acme"])]}}})
    store = _SwallowsCancellation(tmp_path / "tenants.db")
    tenants = TenantDirectory(settings, store, _NoBudgets(), Tenancy(settings), UsageTally())
    await tenants.start()
    await asyncio.sleep(tenants.poll_s * 2)  # the poller is in `version` now
    await asyncio.wait_for(tenants.close(), timeout=tenants.poll_s + 1)
    assert tenants._poller is not None and tenants._poller.done()
