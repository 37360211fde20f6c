"""API keys as clients really send them: bytes beyond ASCII, and the admin key's scheme."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from server.settings import hash_api_key
from tests.helpers import user
from tests.servers import RunningProxy

StartProxy = Callable[..., RunningProxy]
UNICODE_KEY = "sk-clé-ключ-🔑"
ADMIN_KEY = "admin-clé-🔑"


def test_a_key_beyond_ascii_authenticates(start_proxy: StartProxy) -> None:
    """The configuration hashes the key's UTF-8 bytes; the client sends those bytes."""
    proxy = start_proxy(
        tenants={"intl": {"api_keys": [hash_api_key(UNICODE_KEY)], "interventions_per_session": 1}}
    )
    body = {"model": "never", "messages": user()}
    raw = f"Bearer {UNICODE_KEY}".encode()
    good = httpx.post(
        f"{proxy.url}/v1/chat/completions", json=body, headers=[(b"authorization", raw)]
    )
    assert good.status_code == 200, good.text
    wrong = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=body,
        headers=[(b"authorization", raw[:-1] + b"?")],
    )
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"Bearer " + ADMIN_KEY.encode(), 200),
        (b"bearer " + ADMIN_KEY.encode(), 200),
        (ADMIN_KEY.encode(), 401),  # no scheme
        (b"Basic " + ADMIN_KEY.encode(), 401),
        (b"Bearer wrong", 401),
    ],
)
def test_the_admin_key_is_a_bearer_token(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch, header: bytes, status: int
) -> None:
    monkeypatch.setenv("ESCALATOR_TEST_ADMIN_KEY", ADMIN_KEY)
    proxy = start_proxy(server={"admin_key_env": "ESCALATOR_TEST_ADMIN_KEY"})
    response = httpx.post(f"{proxy.url}/admin/helpers/reload", headers=[(b"authorization", header)])
    assert response.status_code == status, response.text
    if status == 401:
        assert "admin" in response.json()["error"]["message"]
