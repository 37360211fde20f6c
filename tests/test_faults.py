"""Bad input and upstream faults: OpenAI's error envelope with the right status, never a 500,
and no budget unit lost or double counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import metric, records, user, wait_until
from tests.servers import KEYS, RunningProxy, free_port

StartProxy = Callable[..., RunningProxy]
SESSION = {"x-session-id": "ep-1"}


def assert_envelope(
    response: httpx.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert response.headers["x-request-id"].startswith("req_")
    return dict(error)


@pytest.mark.parametrize(
    ("content", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "empty"),
        (b"[1, 2]", None, "JSON object"),
        (b'"text"', None, "JSON object"),
        (b'{"model": "never"}', "messages", "messages"),
        (b'{"model": "never", "messages": "hi"}', "messages", "non-empty array"),
        (b'{"model": "never", "messages": []}', "messages", "non-empty array"),
        (b'{"model": "never", "messages": [1]}', "messages[0]", "role"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model", "model"),
        (
            b'{"model": "never", "stream": "yes", "messages": [{"role": "user"}]}',
            "stream",
            "boolean",
        ),
    ],
)
def test_malformed_requests_get_a_400_envelope(
    client: httpx.Client, content: bytes, param: str | None, fragment: str
) -> None:
    response = client.post("/v1/chat/completions", content=content, headers=SESSION)
    error = assert_envelope(response, 400, param)
    assert fragment in error["message"] and error["type"] == "invalid_request_error"
    assert response.headers["x-escalator-action"] == "none"
    assert response.headers["x-escalator-budget-remaining"] == "none"


def test_an_unknown_model_is_a_404(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": user()})
    assert assert_envelope(response, 404, "model")["code"] == "model_not_found"


def test_a_body_over_the_limit_is_a_413(client: httpx.Client) -> None:
    big = "x" * (70 * 1024)
    response = client.post("/v1/chat/completions", json={"model": "never", "messages": user(big)})
    assert_envelope(response, 413)

    def chunked() -> Any:
        yield b'{"model": "never", "messages": [{"role": "user", "content": "'
        yield b"x" * (70 * 1024)
        yield b'"}]}'

    streamed = client.post("/v1/chat/completions", content=chunked())  # no content-length
    assert_envelope(streamed, 413)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer sk-wrong", "Basic abc", "Bearer"],
    ids=["missing", "unknown", "scheme", "empty"],
)
def test_a_missing_or_unknown_key_is_a_401(proxy: RunningProxy, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "never", "messages": user()},
        headers=headers,
    )
    assert assert_envelope(response, 401)["code"] == "invalid_api_key"
    assert httpx.get(f"{proxy.url}/v1/models", headers=headers).status_code == 401


def test_another_tenants_session_is_a_404(client: httpx.Client, proxy: RunningProxy) -> None:
    client.post(
        "/v1/chat/completions", json={"model": "never", "messages": user()}, headers=SESSION
    )
    with httpx.Client(
        base_url=proxy.url, headers={"authorization": f"Bearer {KEYS['globex']}"}
    ) as globex:
        assert_envelope(globex.get("/v1/sessions/ep-1"), 404)
        assert_envelope(globex.post("/v1/sessions/ep-1/outcome", json={"success": True}), 404)
    assert client.get("/v1/sessions/ep-1").status_code == 200


def test_unknown_endpoints_and_methods_get_envelopes(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/nothing"), 404)
    assert_envelope(client.get("/v1/chat/completions"), 405)


def test_a_bad_session_id_is_a_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "never", "messages": user()},
        headers={"x-session-id": "x" * 600},
    )
    assert_envelope(response, 400, "X-Session-Id")


# -- upstream faults ---------------------------------------------------------------------------


def post(client: httpx.Client, model: str, **body: Any) -> httpx.Response:
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": user(), **body}, headers=SESSION
    )


def test_an_upstream_refusing_connections_is_a_502(start_proxy: StartProxy) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proxy = start_proxy(
        upstreams={"weak": {"base_url": dead, "models": ["echo"]}, "strong": {"base_url": dead}}
    )
    with httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {KEYS['acme']}"}) as c:
        error = assert_envelope(post(c, "never"), 502)
        assert "unreachable" in error["message"]
        assert (
            metric(c, "escalator_upstream_errors_total", upstream="weak", kind="unreachable") == 1
        )
        streamed = post(c, "echo", stream=True)
        assert_envelope(streamed, 502)


def test_an_upstream_200_that_is_not_json_is_a_502_counted_as_a_bad_answer(
    client: httpx.Client,
) -> None:
    error = assert_envelope(post(client, "not-json-200"), 502)
    assert error["code"] == "upstream_bad_answer" and "not JSON" in error["message"]
    assert metric(client, "escalator_upstream_errors_total", kind="bad_answer") == 1
    assert metric(client, "escalator_upstream_errors_total", kind="unreachable") == 0


def test_an_upstream_stalling_past_the_timeout_is_a_504(client: httpx.Client) -> None:
    error = assert_envelope(post(client, "stall"), 504)
    assert error["code"] == "upstream_timeout"
    assert metric(client, "escalator_upstream_errors_total", kind="timeout") == 1


def test_an_upstream_429_passes_through_with_retry_after(client: httpx.Client) -> None:
    response = post(client, "429")
    error = assert_envelope(response, 429)
    assert response.headers["retry-after"] == "7"
    assert error["type"] == "rate_limit_error" and error["message"] == "slow down"


def test_an_upstream_400_passes_through_with_its_message(client: httpx.Client) -> None:
    assert assert_envelope(post(client, "bad-request"), 400)["message"] == "context too long"


@pytest.mark.parametrize("model", ["html-502", "error-500"])
def test_an_upstream_server_error_is_a_json_502(client: httpx.Client, model: str) -> None:
    error = assert_envelope(post(client, model), 502)
    assert "<html>" not in error["message"]


def test_an_upstream_dying_mid_stream_ends_with_an_error_event(
    client: httpx.Client, proxy: RunningProxy
) -> None:
    response = post(client, "die-mid-stream", stream=True)
    assert response.status_code == 200
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert len(events) == 3  # two relayed chunks, then the error
    record = records(proxy, 1)[-1]
    assert "error" in record["upstream"]
    assert metric(client, "escalator_upstream_errors_total", kind="broken_stream") == 1


def test_an_upstream_dying_before_answering_is_a_502(client: httpx.Client) -> None:
    assert_envelope(post(client, "die-mid-stream"), 502)


def test_an_upstream_stalling_mid_stream_ends_with_a_timeout_event(client: httpx.Client) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        headers=SESSION,
        json={"model": "stall", "messages": user(), "stream": True},
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert orjson.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        rest = [line for line in lines if line.startswith("data: ")]
    assert orjson.loads(rest[-1][6:])["error"]["code"] == "upstream_timeout"


# -- interventions that fail are refunded ------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_intervention_is_refunded_and_the_base_model_answers(
    client: httpx.Client, proxy: RunningProxy, stream: bool
) -> None:
    response = post(client, "fragile", stream=stream)
    assert response.status_code == 200
    assert response.headers["x-escalator-action"] == "base"
    assert response.headers["x-escalator-budget-remaining"] == "2"
    session = client.get("/v1/sessions/ep-1").json()
    wait_until(lambda: client.get("/v1/sessions/ep-1").json()["interventions_used"] == 0)
    assert session["steps"] == 1
    record = records(proxy, 1)[-1]
    assert record["decision"]["action"] == "strong"
    assert record["failed_intervention"]["status"] == 502
    assert record["upstream"]["name"] == "weak" and record["upstream"]["status"] == 200
    assert metric(client, "escalator_interventions_total", result="refunded") == 1


def test_a_stalled_intervention_times_out_and_is_refunded(client: httpx.Client) -> None:
    response = post(client, "stalling")
    assert response.status_code == 200 and response.headers["x-escalator-action"] == "base"
    wait_until(lambda: client.get("/v1/sessions/ep-1").json()["interventions_used"] == 0)


def test_when_everything_fails_the_unit_is_refunded_once(
    client: httpx.Client, proxy: RunningProxy
) -> None:
    assert_envelope(post(client, "broken"), 502)
    assert_envelope(post(client, "broken"), 502)
    wait_until(lambda: metric(client, "escalator_interventions_total", result="refunded") == 2)
    assert client.get("/v1/sessions/ep-1").json()["interventions_used"] == 0
    logged = records(proxy, 2)
    assert [r["upstream"]["status"] for r in logged] == [502, 502]


# -- clients that go away ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_cancels_the_upstream_request(
    client: httpx.Client, proxy: RunningProxy, fake_upstream: FakeUpstream, stream: bool
) -> None:
    before = fake_upstream.log.cancelled
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/v1/chat/completions",
            json={"model": "stalling", "messages": user(), "stream": stream},
            headers=SESSION,
            timeout=httpx.Timeout(10, read=0.3),
        )
    wait_until(lambda: fake_upstream.log.cancelled == before + 1)
    # The intervention never answered: its unit is returned, and the step is still logged.
    wait_until(lambda: client.get("/v1/sessions/ep-1").json()["interventions_used"] == 0)
    assert records(proxy, 1)[-1]["route"] == "stalling"


def test_an_unreachable_budget_store_is_a_503_and_not_ready(start_proxy: StartProxy) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    proxy = start_proxy(storage={"budget_store": "redis", "redis_url": dead})
    with httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {KEYS['acme']}"}) as c:
        error = assert_envelope(post(c, "always"), 503)
        assert "budget store is unavailable" in error["message"]
        assert dead.split("//")[1].split("/")[0] not in error["message"]  # no address
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["budget_store"] is False
