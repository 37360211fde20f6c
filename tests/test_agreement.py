"""Agreement checks: an escalated step's answer compared with the base model's, and a base
step's with the intervention's, logged for the trainer (server/agreement.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.agreement import agreement
from server.settings import TenantLimits, hash_api_key
from tests.fake_upstream import FakeUpstream
from tests.helpers import metric, records, user, wait_until
from tests.servers import KEYS, RunningProxy

StartProxy = Callable[..., RunningProxy]


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("delivered", "base", "expected"),
    [
        ({"content": "ACTION: go north"}, {"content": "action: go north."}, 1.0),
        (
            {"content": "Thought: the door.\nACTION: open door"},
            {"content": "ACTION: open door"},
            1.0,
        ),
        ({"content": "Thought: x\nACTION: open door"}, {"content": "ACTION: take key"}, 0.0),
        ({"content": "Step 2: 33 - 8 = 25."}, {"content": "Step 2: 33 - 8 = 24."}, 0.0),
        (
            {"tool_calls": [call("get_weather", '{"city": "Paris", "unit": "c"}')]},
            {"content": None, "tool_calls": [call("get_weather", '{"unit":"c","city":"Paris"}')]},
            1.0,
        ),
        (
            {"tool_calls": [call("get_weather", '{"city": "Paris"}')]},
            {"tool_calls": [call("get_weather", '{"city": "Rome"}')]},
            0.0,
        ),
        ({"tool_calls": [call("f", "{}")]}, {"content": "f()"}, 0.0),
        ({"content": [{"type": "text", "text": "42"}]}, {"content": "42"}, 1.0),
        ({"content": ""}, {"content": "something"}, 0.0),
        (None, None, 1.0),
    ],
)
def test_answers_agree_when_they_do_the_same_thing(
    delivered: dict[str, Any] | None, base: dict[str, Any] | None, expected: float
) -> None:
    assert agreement(delivered, base) == expected


def route(strong_model: str, **extra: Any) -> dict[str, Any]:
    return {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": "always"},
        "interventions": [{"kind": "strong", "upstream": "strong", "model": strong_model}],
        **extra,
    }


def step(proxy: RunningProxy, session: str = "ep-1", **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-session-id": session}
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers=headers,
        timeout=10,
        json={"model": "agent", "messages": user(), **body},
    )


def agreements(proxy: RunningProxy, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [r for r in records(proxy, 0, agreement=True) if r["kind"] == "agreement"]
        return len(found) >= count

    wait_until(logged)
    return found


@pytest.mark.parametrize("stream", [False, True])
def test_an_escalated_step_is_checked_against_the_base_model_after_its_answer(
    start_proxy: StartProxy, fake_upstream: FakeUpstream, stream: bool
) -> None:
    proxy = start_proxy(routes={"agent": route("strong-model")})
    before = len(fake_upstream.log.requests)
    response = step(proxy, stream=stream)
    assert response.status_code == 200 and response.headers["x-escalator-action"] == "strong"
    (check,) = agreements(proxy, 1)
    (step_record,) = records(proxy, 1)
    assert check["agreement"] == 1.0  # the fake echoes: both models answer the same
    assert (check["session"], check["step"]) == ("ep-1", step_record["step"])
    assert check["request_id"] == step_record["id"] == response.headers["x-request-id"]
    assert check["base"]["model"] == "weak-model" and check["base"]["status"] == 200
    sent = fake_upstream.log.requests[before:]
    assert [r["model"] for r in sent] == ["strong-model", "weak-model"]
    assert "stream" not in sent[1]  # the check never streams
    with httpx.Client(base_url=proxy.url) as client:
        agreed = metric(client, "escalator_agreement_checks_total", route="agent", result="agree")
    assert agreed == 1


def test_a_base_model_that_answers_otherwise_disagrees(start_proxy: StartProxy) -> None:
    proxy = start_proxy(routes={"agent": route("vote")})  # "The answer is 42" vs the echo
    step(proxy)
    (check,) = agreements(proxy, 1)
    assert check["agreement"] == 0.0


def test_no_check_on_base_steps_sessionless_steps_or_where_turned_off(
    start_proxy: StartProxy, fake_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(
        routes={
            "agent": route("strong-model", policy={"kind": "never"}),
            "quiet": route("strong-model", agreement_checks=False),
        }
    )
    step(proxy)  # base: nothing to compare
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    body = {"model": "agent", "messages": user()}
    httpx.post(f"{proxy.url}/v1/chat/completions", headers=headers, json=body)  # no session
    step(proxy, model="quiet")
    records(proxy, 3)
    assert [r["kind"] for r in records(proxy, 3, agreement=True)] == ["step"] * 3
    assert fake_upstream.log.models()[-1] == "strong-model"  # no base call after it


def test_a_failed_check_is_counted_and_logs_nothing(start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        routes={
            "agent": {
                **route("strong-model"),
                "base": {"upstream": "weak", "model": "error-500-weak"},
            }
        }
    )
    assert step(proxy).status_code == 200
    with httpx.Client(base_url=proxy.url) as client:
        wait_until(
            lambda: (
                metric(client, "escalator_agreement_checks_total", route="agent", result="failed")
                == 1
            )
        )
    assert [r["kind"] for r in records(proxy, 1, agreement=True)] == ["step"]


def test_checks_behind_a_slow_base_model_are_shed_not_piled_up(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.agreement_checks.MAX_CHECKS_IN_FLIGHT", 1)
    slow_base = {**route("strong-model"), "base": {"upstream": "weak", "model": "slow-0.5"}}
    proxy = start_proxy(routes={"agent": slow_base})
    assert step(proxy, session="ep-1").status_code == 200  # its check waits 0.5 s
    assert step(proxy, session="ep-2").status_code == 200  # its check is shed
    with httpx.Client(base_url=proxy.url) as client:

        def checks(result: str) -> float:
            return metric(client, "escalator_agreement_checks_total", route="agent", result=result)

        assert checks("skipped") == 1
        wait_until(lambda: checks("agree") == 1)
    assert len(agreements(proxy, 1)) == 1


def checking(share: float | None = None, **limits: Any) -> dict[str, Any]:
    """The `acme` tenant, checking that share of its base steps (None: left unset)."""
    acme: dict[str, Any] = {"api_keys": [hash_api_key(KEYS["acme"])], **limits}
    if share is not None:
        acme["base_step_checks"] = share
    return {"acme": acme}


def test_a_base_step_is_checked_against_the_intervention_without_spending_budget(
    start_proxy: StartProxy, fake_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(
        routes={"agent": route("strong-model", policy={"kind": "never"})},
        tenants=checking(1.0, interventions_per_session=2),
    )
    before = len(fake_upstream.log.requests)
    response = step(proxy, stream=True)
    assert response.headers["x-escalator-action"] == "base"
    (check,) = agreements(proxy, 1)
    (step_record,) = records(proxy, 1)
    assert check["agreement"] == 1.0 and check["asked"] == "intervention"
    assert check["request_id"] == step_record["id"] == response.headers["x-request-id"]
    assert check["intervention"]["model"] == "strong-model"
    assert check["intervention"]["status"] == 200 and "base" not in check
    sent = fake_upstream.log.requests[before:]
    assert [r["model"] for r in sent] == ["weak-model", "strong-model"]
    assert "stream" not in sent[1]
    # The check spent nothing: the next step still has the whole budget.
    assert step(proxy).headers["x-escalator-budget-remaining"] == "2"
    with httpx.Client(base_url=proxy.url) as client:
        counted = metric(
            client,
            "escalator_agreement_checks_total",
            route="agent",
            asked="intervention",
            result="agree",
        )
        tokens = metric(
            client, "escalator_tokens_total", tenant="acme", upstream="strong", type="prompt"
        )
    assert counted >= 1 and tokens > 0  # the check's tokens are the tenant's


def test_a_failed_intervention_check_is_counted_and_logs_nothing(
    start_proxy: StartProxy,
) -> None:
    proxy = start_proxy(
        routes={"agent": route("error-500", policy={"kind": "never"})},
        tenants=checking(1.0),
    )
    assert step(proxy).status_code == 200
    with httpx.Client(base_url=proxy.url) as client:
        wait_until(
            lambda: (
                metric(
                    client,
                    "escalator_agreement_checks_total",
                    route="agent",
                    asked="intervention",
                    result="failed",
                )
                == 1
            )
        )
    assert [r["kind"] for r in records(proxy, 1, agreement=True)] == ["step"]


def test_base_steps_are_checked_at_the_exploration_rate_unless_set() -> None:
    assert TenantLimits().base_checks == 0.0
    assert TenantLimits(exploration=0.3).base_checks == 0.3
    assert TenantLimits(exploration=0.3, base_step_checks=0.0).base_checks == 0.0
    assert TenantLimits(base_step_checks=0.5).base_checks == 0.5
    with pytest.raises(ValueError, match="base_step_checks"):
        TenantLimits(base_step_checks=1.5)
