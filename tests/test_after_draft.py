"""Decision timing `after_draft`: the base model answers first, the helper judges the draft,
and the draft is served or discarded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from router.state import draft_features
from tests.fake_upstream import FakeUpstream
from tests.helpers import records, user
from tests.servers import KEYS, RunningProxy

StartProxy = Callable[..., RunningProxy]


def cascade(policy: str, strong_model: str = "strong-model") -> dict[str, Any]:
    return {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": policy},
        "decide": "after_draft",
        "interventions": [{"kind": "strong", "upstream": "strong", "model": strong_model}],
    }


def step(proxy: RunningProxy, **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-session-id": "ep-1"}
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers=headers,
        timeout=10,
        json={"model": "cascade", "messages": user(), **body},
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_kept_draft_is_the_answer_and_costs_one_call(
    start_proxy: StartProxy, fake_upstream: FakeUpstream, stream: bool
) -> None:
    proxy = start_proxy(routes={"cascade": cascade("never")})
    before = len(fake_upstream.log.requests)
    response = step(proxy, stream=stream)
    assert response.status_code == 200 and response.headers["x-escalator-action"] == "base"
    sent = fake_upstream.log.requests[before:]
    assert len(sent) == 1 and sent[0]["logprobs"] is True and "stream" not in sent[0]
    if stream:
        data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        text = "".join(
            orjson.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1]
        )
    else:
        choice = response.json()["choices"][0]
        assert choice["logprobs"] is None  # the client did not ask for them
        text = choice["message"]["content"]
    assert text == "echo: What is 2+2?"
    record = records(proxy, 1)[-1]
    assert record["draft"]["served"] is True and record["draft"]["latency_ms"] > 0
    assert record["state"]["features"]["draft_uncertainty"] == pytest.approx(0.1)


def test_the_client_keeps_logprobs_it_asked_for(start_proxy: StartProxy) -> None:
    proxy = start_proxy(routes={"cascade": cascade("never")})
    choice = step(proxy, logprobs=True).json()["choices"][0]
    assert choice["logprobs"]["content"][0]["logprob"] == -0.1


@pytest.mark.parametrize("stream", [False, True])
def test_an_escalation_discards_the_draft(
    start_proxy: StartProxy, fake_upstream: FakeUpstream, stream: bool
) -> None:
    proxy = start_proxy(routes={"cascade": cascade("always")})
    before = len(fake_upstream.log.requests)
    response = step(proxy, stream=stream)
    assert response.headers["x-escalator-action"] == "strong"
    models = [r["model"] for r in fake_upstream.log.requests[before:]]
    assert models == ["weak-model", "strong-model"]
    record = records(proxy, 1)[-1]
    assert record["draft"]["served"] is False and record["draft"]["model"] == "weak-model"
    assert record["upstream"]["model"] == "strong-model"
    assert record["decision"]["budget_after"] == 1


def test_a_failed_escalation_serves_the_draft_without_calling_base_again(
    start_proxy: StartProxy, fake_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(routes={"cascade": cascade("always", strong_model="error-500-strong")})
    before = len(fake_upstream.log.requests)
    response = step(proxy)
    assert response.status_code == 200 and response.headers["x-escalator-action"] == "base"
    assert response.headers["x-escalator-budget-remaining"] == "2"  # refunded
    assert len(fake_upstream.log.requests[before:]) == 2  # the draft, the failed intervention
    assert response.json()["choices"][0]["message"]["content"] == "echo: What is 2+2?"


def test_draft_features_read_the_drafts_confidence() -> None:
    unsure = {
        "choices": [
            {
                "finish_reason": "length",
                "message": {"content": "maybe 4"},
                "logprobs": {"content": [{"logprob": -2.0}, {"logprob": -1.0}]},
            }
        ]
    }
    bad_call = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"name": "calc", "arguments": "{not json"}}],
                },
            }
        ]
    }
    assert draft_features(unsure)["draft_uncertainty"] == 1.5
    assert draft_features(unsure)["draft_min_logprob"] == -2.0
    assert draft_features(unsure)["draft_truncated"] == 1.0
    assert draft_features(bad_call)["draft_invalid_tool_args"] == 1.0
    assert draft_features(bad_call)["draft_tool_calls"] == 1.0
