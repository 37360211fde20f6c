"""The proxy over real HTTP in front of the fake upstream: the request flow end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from router.decision import BudgetView, Decision
from router.policies import register_policy
from router.state import StepState
from tests.fake_upstream import FakeUpstream
from tests.helpers import metric, records, user
from tests.servers import KEYS, RunningProxy

StartProxy = Callable[..., RunningProxy]


def chat(
    client: httpx.Client, model: str = "never", session: str | None = "ep-1", **body: Any
) -> httpx.Response:
    headers = {"x-session-id": session} if session else {}
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": user(), **body}, headers=headers
    )


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def test_a_step_on_the_base_model_returns_the_upstream_answer(client: httpx.Client) -> None:
    response = chat(client, "never")
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "weak-model"
    assert body["choices"][0]["message"]["content"] == "echo: What is 2+2?"
    assert response.headers["x-escalator-action"] == "base"
    assert response.headers["x-escalator-budget-remaining"] == "2"
    assert response.headers["x-escalator-score"] == "0.0000"
    assert response.headers["x-request-id"].startswith("req_")


def test_escalations_stop_when_the_session_budget_is_spent(client: httpx.Client) -> None:
    answers = [chat(client, "always") for _ in range(3)]
    assert [r.headers["x-escalator-action"] for r in answers] == ["strong", "strong", "base"]
    assert [r.headers["x-escalator-budget-remaining"] for r in answers] == ["1", "0", "0"]
    assert [r.json()["model"] for r in answers] == ["strong-model", "strong-model", "weak-model"]
    session = client.get("/v1/sessions/ep-1").json()
    assert session == {
        "session": "ep-1",
        "tenant": "acme",
        "steps": 3,
        "interventions_used": 2,
        "interventions_left": 0,
        "outcome_reported": False,
    }
    assert metric(client, "escalator_budget_denials_total", route="always") == 1


def test_sessions_are_counted_per_session(client: httpx.Client) -> None:
    chat(client, "always", session="a")
    chat(client, "always", session="b")
    assert client.get("/v1/sessions/a").json()["interventions_left"] == 1
    assert client.get("/v1/sessions/b").json()["steps"] == 1


def test_body_fields_reach_the_upstream_unchanged(
    client: httpx.Client, fake_upstream: FakeUpstream
) -> None:
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    extra = {
        "tools": tools,
        "tool_choice": "auto",
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
        "temperature": 0.3,
        "top_k": 20,
        "chat_template_kwargs": {"enable_thinking": False},
        "metadata": {"session_id": "ep-9", "note": "kept"},
    }
    response = client.post(
        "/v1/chat/completions", json={"model": "never", "messages": user(), **extra}
    )
    assert response.status_code == 200
    sent = fake_upstream.log.requests[-1]
    assert sent == {"model": "weak-model", "messages": user(), **extra}
    body = response.json()
    assert len(body["choices"]) == 2
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "calc"
    # The session came from metadata.session_id.
    assert client.get("/v1/sessions/ep-9").json()["steps"] == 1


def test_logprobs_come_back_from_the_upstream(client: httpx.Client) -> None:
    body = chat(client, "never", logprobs=True, top_logprobs=1).json()
    assert body["choices"][0]["logprobs"]["content"][0]["token"] == "echo:"


def test_a_stream_relays_every_event_and_ends_with_done(client: httpx.Client) -> None:
    response = chat(client, "always", stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-escalator-action"] == "strong"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip() == "echo: What is 2+2?"
    assert chunks[-1]["usage"]["prompt_tokens"] == 11


def test_a_streamed_tool_call(client: httpx.Client, proxy: RunningProxy) -> None:
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    response = chat(client, "never", stream=True, tools=tools)
    assert response.status_code == 200 and sse_events(response.text)[-1] == "[DONE]"
    record = records(proxy, 1)[-1]
    assert record["response"]["tool_calls"][0]["function"] == {
        "name": "calc",
        "arguments": '{"echo":true}',
    }


def test_a_plain_upstream_model_is_passed_through_without_a_decision(
    client: httpx.Client, proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    response = chat(client, "echo")
    assert response.status_code == 200
    assert fake_upstream.log.requests[-1]["model"] == "echo"
    assert response.headers["x-escalator-action"] == "base"
    assert "x-escalator-score" not in response.headers
    record = records(proxy, 1)[-1]
    assert record["route"] is None and record["decision"] is None
    assert record["upstream"]["name"] == "weak"


def test_a_request_without_a_session_is_a_one_step_session(
    client: httpx.Client, proxy: RunningProxy
) -> None:
    response = chat(client, "never", session=None)
    record = records(proxy, 1)[-1]
    assert record["one_step"] is True and record["step"] == 0
    assert record["session"] == response.headers["x-request-id"]


def test_models_lists_routes_and_pass_through_models(client: httpx.Client) -> None:
    data = client.get("/v1/models").json()["data"]
    owners = {m["id"]: m["owned_by"] for m in data}
    assert owners["agent"] == owners["always"] == "escalator"
    assert owners["echo"] == "weak" and owners["strong-model"] == "strong"
    assert all(m["object"] == "model" for m in data)


def test_completions_pass_through(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    response = client.post(
        "/v1/completions", json={"model": "echo", "prompt": "Say hi", "echo": False}
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "echo: Say hi"
    assert fake_upstream.log.requests[-1] == {"model": "echo", "prompt": "Say hi", "echo": False}
    streamed = client.post(
        "/v1/completions", json={"model": "agent", "prompt": "Hi", "stream": True}
    )
    assert sse_events(streamed.text)[-1] == "[DONE]"
    assert fake_upstream.log.requests[-1]["model"] == "weak-model"  # a route means its base


def test_the_step_record(client: httpx.Client, proxy: RunningProxy) -> None:
    messages = [
        {"role": "user", "content": "open it"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "open", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Error: not found"},
    ]
    chat(client, "always", messages=messages)
    (record,) = records(proxy, 1)
    assert record["schema"] == 1 and record["kind"] == "step"
    assert (record["tenant"], record["session"], record["step"], record["route"]) == (
        "acme",
        "ep-1",
        0,
        "always",
    )
    assert record["state"]["messages"] == messages
    assert record["state"]["features"]["last_tool_error"] == 1.0
    assert record["decision"] == {
        "action": "strong",
        "p_escalate": 1.0,
        "propensity": 1.0,
        "explored": False,
        "policy": "always",
        "reason": "always",
        "budget_before": 2,
        "budget_after": 1,
    }
    upstream = record["upstream"]
    assert (upstream["name"], upstream["model"], upstream["status"]) == (
        "strong",
        "strong-model",
        200,
    )
    assert upstream["prompt_tokens"] == 11 and upstream["latency_ms"] > 0
    assert record["response"] == {"content": "echo: open it", "tool_calls": None}
    assert record["config_hash"] == proxy.state.service.config_hash


def test_content_is_not_captured_when_the_tenant_forbids_it(proxy: RunningProxy) -> None:
    with httpx.Client(
        base_url=proxy.url, headers={"authorization": f"Bearer {KEYS['globex']}"}
    ) as globex:
        assert chat(globex, "never").status_code == 200
    (record,) = records(proxy, 1)
    assert record["tenant"] == "globex"
    assert "messages" not in record["state"] and "response" not in record
    assert record["state"]["features"]["n_messages"] == 1


def test_the_outcome_is_logged_once(client: httpx.Client, proxy: RunningProxy) -> None:
    chat(client, "never")
    reported = client.post("/v1/sessions/ep-1/outcome", json={"success": True, "reward": 0.5})
    assert reported.status_code == 200 and reported.json()["recorded"] is True
    again = client.post("/v1/sessions/ep-1/outcome", json={"success": False})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "outcome_already_reported"
    outcomes = [r for r in records(proxy, 2) if r["kind"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0] | {"ts": 0} == {
        "schema": 1,
        "kind": "outcome",
        "ts": 0,
        "tenant": "acme",
        "session": "ep-1",
        "success": True,
        "reward": 0.5,
        "config_hash": proxy.state.service.config_hash,
    }
    assert client.get("/v1/sessions/ep-1").json()["outcome_reported"] is True


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"success": "yes"}, "success"),
        ({}, "success"),
        ({"success": True, "reward": "x"}, "reward"),
    ],
)
def test_a_bad_outcome_is_refused(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    chat(client, "never")
    response = client.post("/v1/sessions/ep-1/outcome", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_an_outcome_for_an_unknown_session(client: httpx.Client) -> None:
    response = client.post("/v1/sessions/nope/outcome", json={"success": True})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def test_exploration_flips_decisions_and_logs_their_propensity(start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        tenants={"acme": {"api_keys": [], "exploration": 1.0}}, server={"anonymous_tenant": "acme"}
    )
    with httpx.Client(base_url=proxy.url) as anonymous:
        response = chat(anonymous, "never")
    assert response.headers["x-escalator-action"] == "strong"
    decision = records(proxy, 1)[-1]["decision"]
    assert decision["explored"] is True and decision["propensity"] == 1.0
    assert decision["reason"] == "exploration"


def test_the_tenant_daily_cap_spans_sessions(start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        tenants={"acme": {"api_keys": [], "interventions_per_day": 1}},
        server={"anonymous_tenant": "acme"},
    )
    with httpx.Client(base_url=proxy.url) as anonymous:
        first = chat(anonymous, "always", session="a")
        second = chat(anonymous, "always", session="b")
        assert metric(anonymous, "escalator_budget_denials_total") == 1
    assert first.headers["x-escalator-action"] == "strong"
    assert second.headers["x-escalator-action"] == "base"
    assert records(proxy, 2)[-1]["decision"]["reason"] == "budget_exhausted"


class _Broken:
    policy_id = "broken"
    inline = True
    thresholded = False

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        raise RuntimeError("the helper crashed")


class _Sleepy:
    policy_id = "sleepy"
    inline = False
    thresholded = False

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        import time

        time.sleep(0.3)
        return Decision("strong", 1.0, 1.0, self.policy_id, "sleepy")


register_policy("test-broken")(lambda params, context: _Broken())
register_policy("test-sleepy")(lambda params, context: _Sleepy())


@pytest.mark.parametrize(
    ("kind", "reason"), [("test-broken", "policy_error"), ("test-sleepy", "policy_timeout")]
)
def test_a_failing_helper_falls_open_to_the_base_model(
    start_proxy: StartProxy, kind: str, reason: str
) -> None:
    route = {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": kind},
        "decision_timeout_ms": 50,
        "interventions": [{"kind": "strong", "upstream": "strong", "model": "strong-model"}],
    }
    proxy = start_proxy(routes={"helped": route})
    with httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {KEYS['acme']}"}) as c:
        response = chat(c, "helped")
        assert response.status_code == 200
        assert response.headers["x-escalator-action"] == "base"
        assert metric(c, "escalator_policy_fallbacks_total", route="helped", reason=reason) == 1
    assert records(proxy, 1)[-1]["decision"]["reason"] == reason


def test_metrics_are_exposed_with_bounded_labels(client: httpx.Client) -> None:
    chat(client, "always")
    chat(client, "always", stream=True, stream_options={"include_usage": True})
    assert (
        metric(client, "escalator_requests_total", tenant="acme", route="always", status="200") == 2
    )
    assert metric(client, "escalator_decisions_total", action="strong", reason="always") == 2
    assert metric(client, "escalator_interventions_total", kind="strong", result="completed") == 2
    assert metric(client, "escalator_policy_latency_seconds_count", route="always") == 2
    assert metric(client, "escalator_upstream_latency_seconds_count", upstream="strong") == 2
    assert metric(client, "escalator_upstream_ttft_seconds_count", upstream="strong") == 1
    # The strong model's (the agreement checks' base calls are counted on the weak upstream).
    assert metric(client, "escalator_tokens_total", upstream="strong", type="prompt") == 22
    assert metric(client, "escalator_sessions_total", tenant="acme") == 1
    exposition = client.get("/metrics")
    assert exposition.headers["content-type"].startswith("text/plain")
    assert "session=" not in exposition.text and "ep-1" not in exposition.text


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["upstreams"] is True


def test_not_ready_when_no_upstream_answers(start_proxy: StartProxy) -> None:
    from tests.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    proxy = start_proxy(upstreams={"weak": {"base_url": dead}, "strong": {"base_url": dead}})
    ready = httpx.get(f"{proxy.url}/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "budget_store": True, "upstreams": False}
