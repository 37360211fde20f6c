"""Step feedback over real HTTP: `POST /v1/sessions/{id}/feedback` names a step by its
request id or index, adds a reward to it in the step log, and is harmless to retry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import metric, records, user
from tests.servers import KEYS, RedisServer, RunningProxy

StartProxy = Callable[..., RunningProxy]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_proxy(request: pytest.FixtureRequest, start_proxy: StartProxy) -> RunningProxy:
    """A proxy on each budget store: the request ids live in the store."""
    storage: dict[str, Any] = {"budget_store": request.param}
    if request.param == "redis":
        import redis

        server: RedisServer = request.getfixturevalue("redis_server")
        redis.Redis.from_url(server.url).flushdb()
        storage["redis_url"] = server.url
    return start_proxy(storage=storage)


def as_tenant(proxy: RunningProxy, tenant: str = "acme") -> httpx.Client:
    headers = {"authorization": f"Bearer {KEYS[tenant]}"}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=10)


def steps(client: httpx.Client, n: int, session: str | None = "ep-1", **body: Any) -> list[str]:
    """Send `n` steps of `session`; return their request ids."""
    headers = {"x-session-id": session} if session else {}
    ids = []
    for _ in range(n):
        response = client.post(
            "/v1/chat/completions",
            json={"model": "never", "messages": user(), **body},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-request-id"])
    return ids


def feedback(
    client: httpx.Client, session: str = "ep-1", key: str | None = None, **body: Any
) -> httpx.Response:
    headers = {"idempotency-key": key} if key is not None else {}
    return client.post(f"/v1/sessions/{session}/feedback", json=body, headers=headers)


def feedback_records(proxy: RunningProxy, total: int) -> list[dict[str, Any]]:
    return [r for r in records(proxy, total) if r["kind"] == "feedback"]


def assert_error(
    response: httpx.Response, status: int, param: str | None, code: str | None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert error["message"]


def test_feedback_names_a_step_by_request_id_or_index(store_proxy: RunningProxy) -> None:
    with as_tenant(store_proxy) as client:
        ids = steps(client, 3)
        by_id = feedback(client, request_id=ids[1], reward=0.5)
        by_step = feedback(client, step=2, reward=-1)
    assert by_id.status_code == 200, by_id.text
    assert by_id.json() == {
        "session": "ep-1",
        "step": 1,
        "request_id": ids[1],
        "reward": 0.5,
        "recorded": True,
        "duplicate": False,
    }
    assert by_step.status_code == 200, by_step.text
    assert by_step.json()["request_id"] == ids[2] and by_step.json()["reward"] == -1.0
    logged = feedback_records(store_proxy, 5)
    assert [r | {"ts": 0} for r in logged] == [
        {
            "schema": 1,
            "kind": "feedback",
            "ts": 0,
            "tenant": "acme",
            "session": "ep-1",
            "step": step,
            "request_id": ids[step],
            "reward": reward,
            "config_hash": store_proxy.state.service.config_hash,
        }
        for step, reward in ((1, 0.5), (2, -1.0))
    ]
    # The step records carry the same ids: training joins them on (session, step).
    step_ids = {r["step"]: r["id"] for r in records(store_proxy, 5) if r["kind"] == "step"}
    assert step_ids == dict(enumerate(ids))


def test_a_retry_with_the_same_idempotency_key_is_logged_once(
    store_proxy: RunningProxy,
) -> None:
    with as_tenant(store_proxy) as client:
        ids = steps(client, 2)
        steps(client, 1, session="ep-2")
        first = feedback(client, key="k-1", request_id=ids[0], reward=1)
        retry = feedback(client, key="k-1", request_id=ids[0], reward=1)
        by_index = feedback(client, key="k-1", step=0, reward=1.0)  # the same report
        other_key = feedback(client, key="k-2", request_id=ids[0], reward=1)
        other_session = feedback(client, "ep-2", key="k-1", step=0, reward=1)
        reused = feedback(client, key="k-1", step=1, reward=1)
        assert metric(client, "escalator_feedback_total", tenant="acme") == 3
    assert first.json()["recorded"] is True
    assert retry.status_code == by_index.status_code == 200
    expected = {**first.json(), "recorded": False, "duplicate": True}
    assert retry.json() == by_index.json() == expected
    assert other_key.json()["recorded"] is other_session.json()["recorded"] is True
    assert_error(reused, 409, "Idempotency-Key", "idempotency_key_reused")
    logged = feedback_records(store_proxy, 6)
    assert [(r["session"], r["step"]) for r in logged] == [("ep-1", 0), ("ep-1", 0), ("ep-2", 0)]


def test_rewards_for_one_step_add_up_as_records(proxy: RunningProxy, client: httpx.Client) -> None:
    (request_id,) = steps(client, 1)
    for reward in (0.25, 0.5, -0.125):
        assert feedback(client, request_id=request_id, reward=reward).status_code == 200
    logged = feedback_records(proxy, 4)
    assert [r["reward"] for r in logged] == [0.25, 0.5, -0.125]
    assert {(r["step"], r["request_id"]) for r in logged} == {(0, request_id)}


def test_a_request_without_session_id_keeps_no_session_to_report_on(
    proxy: RunningProxy, client: httpx.Client
) -> None:
    """Without a session id a request is one step the store keeps nothing of (issue 12,
    item 7): feedback for it is a 404 that says how to get a session."""
    (request_id,) = steps(client, 1, session=None)
    response = feedback(client, request_id, request_id=request_id, reward=1)
    assert_error(response, 404, *_NO_SESSION)
    assert "x-session-id" in response.json()["error"]["message"]


def test_a_streamed_step_takes_feedback(proxy: RunningProxy, client: httpx.Client) -> None:
    (request_id,) = steps(client, 1, stream=True)
    assert feedback(client, request_id=request_id, reward=1).json()["step"] == 0


_NO_ID = ("request_id", "step_not_found")
_NO_STEP = ("step", "step_not_found")
_NO_SESSION = (None, "session_not_found")


def test_feedback_for_what_does_not_exist_is_404_and_logs_nothing(proxy: RunningProxy) -> None:
    with as_tenant(proxy) as acme, as_tenant(proxy, "globex") as globex:
        ids = steps(acme, 2)
        (elsewhere,) = steps(acme, 1, session="ep-2")
        # Another tenant's session answers exactly as a session that does not exist.
        theirs = feedback(globex, request_id=ids[0], reward=1)
        missing = feedback(globex, "ep-1-not", request_id=ids[0], reward=1)
        assert_error(theirs, 404, *_NO_SESSION)
        assert theirs.json()["error"]["message"] == missing.json()["error"]["message"].replace(
            "ep-1-not", "ep-1"
        )
        assert_error(feedback(globex, step=0, reward=1), 404, *_NO_SESSION)
        assert_error(feedback(acme, "nope", step=0, reward=1), 404, *_NO_SESSION)
        assert_error(feedback(acme, request_id="req_unknown", reward=1), 404, *_NO_ID)
        assert_error(feedback(acme, request_id=elsewhere, reward=1), 404, *_NO_ID)
        assert_error(feedback(acme, step=2, reward=1), 404, *_NO_STEP)  # not taken yet
        assert_error(feedback(acme, step=-1, reward=1), 404, *_NO_STEP)
        assert metric(acme, "escalator_feedback_total") == 0
        # A report that is accepted afterwards is the only feedback record.
        assert feedback(acme, step=1, reward=1).status_code == 200
    assert len(feedback_records(proxy, 4)) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"step": 0, "reward": NaN}', "reward"),
        (b'{"step": 0, "reward": Infinity}', "reward"),
        (b'{"step": 0, "reward": -Infinity}', "reward"),
        (b'{"step": 0, "reward": 1e999}', "reward"),
        (b'{"step": 0, "reward": "abc"}', "reward"),
        (b'{"step": 0, "reward": "1.0"}', "reward"),
        (b'{"step": 0, "reward": true}', "reward"),
        (b'{"step": 0, "reward": null}', "reward"),
        (b'{"step": 0}', "reward"),
        (b'{"step": true, "reward": 1}', "step"),
        (b'{"step": 0.0, "reward": 1}', "step"),
        (b'{"request_id": 7, "reward": 1}', "request_id"),
        (b'{"request_id": "", "reward": 1}', "request_id"),
        (b'{"reward": 1}', "request_id"),  # neither
        (b'{"request_id": "x", "step": 0, "reward": 1}', "request_id"),  # both
        (b'[{"step": 0, "reward": 1}]', None),
        (b'{"step": 0, "reward": 1', None),
    ],
)
def test_a_bad_report_is_refused_naming_its_parameter(
    proxy: RunningProxy, client: httpx.Client, body: bytes, param: str | None
) -> None:
    steps(client, 1)
    response = client.post(
        "/v1/sessions/ep-1/feedback", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, param, None)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert metric(client, "escalator_feedback_total") == 0


def test_a_bad_idempotency_key_is_refused(client: httpx.Client) -> None:
    steps(client, 1)
    response = feedback(client, key="k" * 256, step=0, reward=1)
    assert_error(response, 400, "Idempotency-Key", None)


def test_a_report_over_64_kb_is_refused(proxy: RunningProxy, client: httpx.Client) -> None:
    steps(client, 1)
    response = feedback(client, step=0, reward=1, note="x" * 70_000)
    assert_error(response, 413, None, "request_too_large")
    assert feedback(client, step=0, reward=1, note="x" * 60_000).status_code == 200
    assert len(feedback_records(proxy, 2)) == 1


@pytest.mark.redis
def test_replicas_sharing_redis_take_feedback_for_each_others_steps(
    start_proxy: StartProxy, redis_server: RedisServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    first, second = (
        start_proxy(
            storage={
                "budget_store": "redis",
                "redis_url": redis_server.url,
                "dir": str(tmp_path / name),
            }
        )
        for name in ("a", "b")
    )
    with as_tenant(first) as a, as_tenant(second) as b:
        ids = steps(a, 2)
        assert feedback(b, key="k", request_id=ids[1], reward=1).json()["step"] == 1
        assert feedback(a, key="k", request_id=ids[1], reward=1).json()["duplicate"] is True
        assert feedback(a, step=0, reward=2).json()["request_id"] == ids[0]
    assert [r["step"] for r in feedback_records(second, 1)] == [1]
    assert [r["step"] for r in feedback_records(first, 3)] == [0]


def test_a_budget_store_that_is_down_is_a_503_on_every_session_route(
    start_proxy: StartProxy,
) -> None:
    # Nothing listens on port 1: every store call fails, as when Redis goes down.
    proxy = start_proxy(storage={"budget_store": "redis", "redis_url": "redis://127.0.0.1:1/0"})
    with as_tenant(proxy) as client:
        answers = [
            client.get("/v1/sessions/ep-1"),
            client.post("/v1/sessions/ep-1/outcome", json={"success": True}),
            feedback(client, step=0, reward=1.0),
            feedback(client, key="k", request_id="req-1", reward=1.0),
        ]
    for response in answers:
        assert_error(response, 503, None, "service_unavailable")
        assert "127.0.0.1" not in response.text  # the address stays in the operator's log
