"""Shadow decisions and calibration to a target escalation rate, through the gateway."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx

from tests.helpers import metric, records
from tests.servers import RunningProxy

StartProxy = Callable[..., RunningProxy]
STRONG = {"kind": "strong", "upstream": "strong", "model": "strong-model"}


def transcript(errors: int) -> list[dict[str, Any]]:
    """An agent transcript whose latest tool results failed `errors` times in a row."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "open the report"}]
    for i in range(errors):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "open", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "Error: file not found"},
        ]
    return messages


def test_a_shadow_policy_decides_without_acting(start_proxy: StartProxy) -> None:
    route = {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": "never"},
        "shadow_policy": {"kind": "always"},
        "interventions": [STRONG],
    }
    proxy = start_proxy(routes={"candidate": route}, server={"anonymous_tenant": "acme"})
    with httpx.Client(base_url=proxy.url) as client:
        response = client.post(
            "/v1/chat/completions", json={"model": "candidate", "messages": transcript(0)}
        )
        assert response.headers["x-escalator-action"] == "base"
        assert (
            metric(client, "escalator_shadow_decisions_total", action="strong", agrees="false") == 1
        )
    decision = records(proxy, 1)[-1]["decision"]
    assert decision["action"] == "base" and decision["policy"] == "never"
    assert decision["shadow"] == {
        "action": "strong",
        "p_escalate": 1.0,
        "policy": "always",
        "reason": "always",
    }


def test_calibration_meets_the_target_escalation_rate(start_proxy: StartProxy) -> None:
    proxy = start_proxy(
        tenants={
            "acme": {
                "api_keys": [],
                "interventions_per_session": 1000,
                "target_escalation_rate": 0.3,
            }
        },
        server={"anonymous_tenant": "acme"},
    )
    rng = random.Random(7)
    actions = []
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(400):
            response = client.post(
                "/v1/chat/completions",
                json={"model": "agent", "messages": transcript(rng.choice([0, 0, 1, 2]))},
                headers={"x-session-id": f"ep-{i}"},
            )
            actions.append(response.headers["x-escalator-action"])
        assert metric(client, "escalator_escalation_target_rate", route="agent") == 0.3
        achieved = metric(client, "escalator_escalation_achieved_rate", route="agent")
    late = actions[100:]  # after the threshold has found its level
    assert 0.2 < late.count("strong") / len(late) < 0.4
    assert 0.2 < achieved < 0.4
    decision = records(proxy, 400)[-1]["decision"]
    assert decision["reason"] == "calibrated" and 0.0 <= decision["threshold"] <= 1.0
