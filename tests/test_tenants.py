"""The admin API for tenants, through a real proxy: create, read, change, delete, keys issued
once and revoked, usage figures, refusals in OpenAI's envelope, and `escalator tenants`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import user
from tests.servers import KEYS, RunningProxy

StartProxy = Callable[..., RunningProxy]
ADMIN_KEY = "admin-tenants-test"
ADMIN_ENV = "ESCALATOR_TENANTS_TEST_ADMIN_KEY"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin_proxy(start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch) -> RunningProxy:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    return start_proxy(server={"admin_key_env": ADMIN_ENV})


@pytest.fixture
def admin(admin_proxy: RunningProxy) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=admin_proxy.url, headers=headers, timeout=10) as client:
        yield client


def step(proxy: RunningProxy, key: str, model: str = "never", session: str = "s") -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": model, "messages": user()},
        headers={"authorization": f"Bearer {key}", "x-session-id": session},
        timeout=10,
    )


def assert_envelope(response: httpx.Response, status: int, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


def test_tenants_from_the_file_are_listed_as_such(admin: httpx.Client) -> None:
    tenants = {t["name"]: t for t in admin.get("/admin/tenants").json()["data"]}
    assert set(tenants) == {"acme", "globex"}
    acme = tenants["acme"]
    assert acme["source"] == "file" and acme["interventions_per_session"] == 2
    assert acme["capture_content"] is True
    assert [(k["source"], k["prefix"]) for k in acme["keys"]] == [("file", None)]


def test_create_read_update_delete(admin: httpx.Client, admin_proxy: RunningProxy) -> None:
    created = admin.post("/admin/tenants", json={"name": "initech", "interventions_per_day": 5})
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert tenant["source"] == "api" and tenant["keys"] == []
    assert tenant["interventions_per_session"] == 3 and tenant["interventions_per_day"] == 5
    assert admin.get("/admin/tenants/initech").json() == tenant

    changed = admin.patch(
        "/admin/tenants/initech",
        json={"interventions_per_day": None, "exploration": 0.25, "target_escalation_rate": 0.2},
    ).json()
    assert changed["interventions_per_day"] is None and changed["exploration"] == 0.25
    assert changed["target_escalation_rate"] == 0.2
    assert changed["interventions_per_session"] == 3  # left out: kept
    assert changed["updated_at"] >= tenant["updated_at"]

    key = admin.post("/admin/tenants/initech/keys").json()["key"]
    assert step(admin_proxy, key).status_code == 200
    assert admin.delete("/admin/tenants/initech").json() == {
        "id": "initech",
        "object": "tenant",
        "deleted": True,
    }
    assert step(admin_proxy, key).status_code == 401  # its keys went with it
    assert_envelope(admin.get("/admin/tenants/initech"), 404, "tenant")
    assert "initech" not in {t["name"] for t in admin.get("/admin/tenants").json()["data"]}


def test_a_changed_limit_applies_to_the_next_step(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    first = step(admin_proxy, KEYS["acme"], model="always", session="limits")
    assert first.headers["x-escalator-action"] == "strong"
    admin.patch("/admin/tenants/acme", json={"interventions_per_session": 1})
    second = step(admin_proxy, KEYS["acme"], model="always", session="limits")
    assert second.headers["x-escalator-action"] == "base"  # 1 used of 1
    session = httpx.get(
        f"{admin_proxy.url}/v1/sessions/limits",
        headers={"authorization": f"Bearer {KEYS['acme']}"},
    ).json()
    assert session["interventions_used"] == 1 and session["interventions_left"] == 0


def test_a_key_is_shown_once_and_works_until_revoked(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    issued = admin.post("/admin/tenants/globex/keys")
    assert issued.status_code == 201
    key = issued.json()
    assert key["key"].startswith(key["prefix"]) and key["tenant"] == "globex"
    assert step(admin_proxy, key["key"]).status_code == 200
    assert step(admin_proxy, KEYS["globex"]).status_code == 200  # the file's key still works

    digest = hashlib.sha256(key["key"].encode()).hexdigest()
    later = [
        admin.get("/admin/tenants"),
        admin.get("/admin/tenants/globex"),
        admin.get("/admin/tenants/globex/keys"),
        admin.patch("/admin/tenants/globex", json={"exploration": 0.0}),
        admin.get("/admin/tenants/globex/usage"),
    ]
    for answer in later:
        assert answer.status_code == 200
        assert key["key"] not in answer.text and digest not in answer.text
    listed = admin.get("/admin/tenants/globex/keys").json()["data"]
    assert {"id": key["id"], "prefix": key["prefix"], "created_at": key["created_at"]}.items() <= (
        next(k for k in listed if k["id"] == key["id"]).items()
    )

    revoked = admin.delete(f"/admin/tenants/globex/keys/{key['id']}")
    assert revoked.json() == {"id": key["id"], "object": "key", "deleted": True}
    assert_envelope(step(admin_proxy, key["key"]), 401)
    assert step(admin_proxy, KEYS["globex"]).status_code == 200
    assert_envelope(admin.delete(f"/admin/tenants/globex/keys/{key['id']}"), 404, "key_id")


def test_usage_counts_steps_escalations_and_the_daily_cap(
    admin: httpx.Client, admin_proxy: RunningProxy
) -> None:
    admin.patch("/admin/tenants/acme", json={"interventions_per_day": 10})
    for _ in range(3):  # C = 2: two escalations, then the budget is spent
        step(admin_proxy, KEYS["acme"], model="always", session="u1")
    for _ in range(2):
        step(admin_proxy, KEYS["acme"], model="never", session="u2")
    httpx.post(  # a pass-through call is not an agent step
        f"{admin_proxy.url}/v1/chat/completions",
        json={"model": "echo", "messages": user()},
        headers={"authorization": f"Bearer {KEYS['acme']}"},
    )
    usage = admin.get("/admin/tenants/acme/usage").json()
    assert usage["steps"] == 5 and usage["escalated_steps"] == 2
    assert usage["escalation_rate"] == pytest.approx(0.4)
    assert usage["interventions_used"] == 2
    assert usage["interventions_per_day"] == 10 and usage["interventions_left"] == 8
    other = admin.get("/admin/tenants/globex/usage").json()
    assert other["steps"] == 0 and other["escalation_rate"] is None
    assert other["interventions_left"] is None  # no daily cap
    past = admin.get("/admin/tenants/acme/usage", params={"day": "2020-01-01"}).json()
    assert past["day"] == "2020-01-01" and past["steps"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("POST", "/admin/tenants", {"name": "acme"}, 409, None),
        ("POST", "/admin/tenants", {"name": "has space"}, 400, "name"),
        ("POST", "/admin/tenants", {"interventions_per_session": 1}, 400, "name"),
        ("POST", "/admin/tenants", {"name": "t", "interventions_per_sesion": 1}, 400, None),
        ("POST", "/admin/tenants", {"name": "t", "exploration": 2}, 400, "exploration"),
        ("POST", "/admin/tenants", {"name": "t", "capture_content": "yes"}, 400, None),
        ("POST", "/admin/tenants", [1, 2], 400, None),
        ("POST", "/admin/tenants", b"{not json", 400, None),
        ("POST", "/admin/tenants", b"", 400, None),
        ("PATCH", "/admin/tenants/acme", {"interventions_per_session": None}, 400, None),
        ("PATCH", "/admin/tenants/acme", {"interventions_per_session": -1}, 400, None),
        ("PATCH", "/admin/tenants/nobody", {"exploration": 0.1}, 404, "tenant"),
        ("DELETE", "/admin/tenants/nobody", None, 404, "tenant"),
        ("POST", "/admin/tenants/nobody/keys", None, 404, "tenant"),
        ("DELETE", "/admin/tenants/acme/keys/key_nothing", None, 404, "key_id"),
        ("GET", "/admin/tenants/acme/usage?day=yesterday", None, 400, "day"),
        ("GET", "/admin/tenants/nobody/usage", None, 404, "tenant"),
        ("PUT", "/admin/tenants/acme", {}, 405, None),
    ],
)
def test_bad_admin_calls_get_envelopes(
    admin: httpx.Client,
    method: str,
    path: str,
    body: Any,
    status: int,
    param: str | None,
) -> None:
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    response = admin.request(method, path, content=content)
    assert_envelope(response, status, param)
    assert "detail" not in response.json()


def test_a_large_admin_body_is_refused_unread(admin: httpx.Client) -> None:
    big = {"name": "big", "padding": "x" * 100_000}
    assert_envelope(admin.post("/admin/tenants", json=big), 413)


def test_the_tenant_api_needs_the_admin_key(
    admin_proxy: RunningProxy, start_proxy: StartProxy
) -> None:
    url = f"{admin_proxy.url}/admin/tenants"
    assert_envelope(httpx.get(url), 401)
    assert_envelope(httpx.get(url, headers={"authorization": f"Bearer {KEYS['acme']}"}), 401)
    # A bad body from someone without the key is a 401, not a validation error.
    assert_envelope(httpx.post(url, content=b"[]"), 401)
    off = start_proxy()  # no admin_key_env: the admin API is off
    assert_envelope(httpx.get(f"{off.url}/admin/tenants"), 404)


def test_the_anonymous_tenant_cannot_be_deleted(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    proxy = start_proxy(server={"admin_key_env": ADMIN_ENV, "anonymous_tenant": "acme"})
    answer = httpx.delete(
        f"{proxy.url}/admin/tenants/acme", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert_envelope(answer, 409)


def test_the_control_plane_is_described_by_openapi(admin_proxy: RunningProxy) -> None:
    spec = httpx.get(f"{admin_proxy.url}/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/admin/tenants",
        "/admin/tenants/{tenant}",
        "/admin/tenants/{tenant}/keys",
        "/admin/tenants/{tenant}/keys/{key_id}",
        "/admin/tenants/{tenant}/usage",
        "/admin/helpers/reload",
        "/v1/sessions/{session}",
        "/v1/sessions/{session}/outcome",
        "/v1/sessions/{session}/feedback",
    } <= paths
    assert "/v1/chat/completions" not in paths  # OpenAI's own specification describes it
    assert "422" not in json.dumps(spec["paths"])
    create = spec["paths"]["/admin/tenants"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["name"] and "exploration" in body["properties"]
    assert create["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    docs = httpx.get(f"{admin_proxy.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def tenants_command(proxy: RunningProxy, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "escalator.py", "tenants", "--url", proxy.url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ESCALATOR_ADMIN_KEY": ADMIN_KEY},
    )


def test_the_tenants_command_drives_the_admin_api(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESCALATOR_ADMIN_KEY", ADMIN_KEY)
    proxy = start_proxy(server={"admin_key_env": "ESCALATOR_ADMIN_KEY"})

    def ok(*args: str) -> Any:
        result = tenants_command(proxy, *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    created = ok("create", "hooli", "--interventions-per-day", "7", "--issue-key")
    assert created["interventions_per_day"] == 7 and created["source"] == "api"
    key = created["issued_key"]
    assert step(proxy, key["key"]).status_code == 200

    changed = ok("update", "hooli", "--no-interventions-per-day", "--capture-content")
    assert changed["interventions_per_day"] is None and changed["capture_content"] is True
    assert [k["id"] for k in ok("keys", "hooli")["data"]] == [key["id"]]
    assert key["key"] not in tenants_command(proxy, "show", "hooli").stdout
    assert ok("usage", "hooli")["steps"] == 1
    ok("revoke-key", "hooli", key["id"])
    assert step(proxy, key["key"]).status_code == 401
    assert "hooli" in {t["name"] for t in ok("list")["data"]}
    ok("delete", "hooli")

    missing = tenants_command(proxy, "show", "hooli")
    assert missing.returncode == 1 and "No tenant 'hooli'" in missing.stderr
    taken = tenants_command(proxy, "create", "acme")
    assert taken.returncode == 1 and "409" in taken.stderr
