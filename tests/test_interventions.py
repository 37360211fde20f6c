"""Every intervention kind through the gateway: strong, reasoning, best-of-N (majority vote
or a judge), streamed and not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from router.verifiers import answer_key
from server.route_plans import load_plans
from server.settings import ConfigError, validate_settings
from tests.fake_upstream import FakeUpstream
from tests.helpers import records, user, wait_until
from tests.servers import KEYS, RunningProxy, proxy_config

StartProxy = Callable[..., RunningProxy]
BASE = {"upstream": "weak", "model": "weak-model"}


def route(intervention: dict[str, Any]) -> dict[str, Any]:
    return {"base": BASE, "policy": {"kind": "always"}, "interventions": [intervention]}


def step(proxy: RunningProxy, model: str = "helped", **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-session-id": "ep-1"}
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": model, "messages": user(), **body},
        headers=headers,
        timeout=10,
    )


def events(response: httpx.Response) -> list[Any]:
    data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [orjson.loads(d) for d in data[:-1]]


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_turns_thinking_on_through_passthrough_parameters(
    start_proxy: StartProxy, fake_upstream: FakeUpstream, stream: bool
) -> None:
    proxy = start_proxy(
        routes={
            "helped": route(
                {
                    "kind": "reasoning",
                    "upstream": "strong",
                    "model": "thinker",
                    "params": {
                        "chat_template_kwargs": {"enable_thinking": True},
                        "reasoning_effort": "high",
                    },
                }
            )
        }
    )
    before = len(fake_upstream.log.requests)
    response = step(proxy, stream=stream, chat_template_kwargs={"custom": 1})
    assert response.status_code == 200
    assert response.headers["x-escalator-action"] == "reasoning"
    (sent,) = [r for r in fake_upstream.log.requests[before:] if r["model"] == "thinker"]
    assert sent["reasoning_effort"] == "high"
    assert sent["chat_template_kwargs"] == {"custom": 1, "enable_thinking": True}
    assert records(proxy, 1)[-1]["decision"]["action"] == "reasoning"


def best_of_n(**settings: Any) -> dict[str, Any]:
    return {
        "kind": "best_of_n",
        "upstream": "strong",
        "model": "vote",
        "n": 4,
        "cost": 2,
        **settings,
    }


def test_best_of_n_asks_for_n_samples_and_answers_with_the_majority(
    start_proxy: StartProxy, fake_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(routes={"helped": route(best_of_n())})
    before = len(fake_upstream.log.requests)
    response = step(proxy, temperature=0.0, stream=False)
    assert response.status_code == 200
    assert response.headers["x-escalator-action"] == "best_of_n"
    assert response.headers["x-escalator-budget-remaining"] == "0"  # cost 2 of 2
    body = response.json()
    assert [c["message"]["content"] for c in body["choices"]] == ["The answer is 42"]
    assert body["choices"][0]["index"] == 0
    assert body["usage"]["completion_tokens"] == 7
    (sent,) = [r for r in fake_upstream.log.requests[before:] if r["model"] == "vote"]
    assert (sent["n"], sent["temperature"], "stream" in sent) == (4, 0.8, False)
    record = records(proxy, 1)[-1]
    assert record["intervention"] == {
        "samples": 4,
        "chosen": 0,
        "verifier": "majority",
        "agreement": 2,
    }


def test_best_of_n_by_parallel_requests(
    start_proxy: StartProxy, fake_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(routes={"helped": route(best_of_n(sampling="parallel"))})
    before = len(fake_upstream.log.requests)
    response = step(proxy)
    # (the base model's agreement check may follow the samples)
    sent = [r for r in fake_upstream.log.requests[before:] if r["model"] == "vote"]
    assert len(sent) == 4 and all("n" not in r for r in sent)
    assert answer_key(response.json()["choices"][0]["message"]) == "text:42"
    assert response.json()["usage"]["prompt_tokens"] == 44  # the four samples' usage, summed


def test_best_of_n_streams_the_chosen_answer(start_proxy: StartProxy) -> None:
    proxy = start_proxy(routes={"helped": route(best_of_n())})
    response = step(proxy, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The answer is 42"
    assert chunks[-1]["usage"]["prompt_tokens"] == 11
    assert records(proxy, 1)[-1]["response"]["content"] == "The answer is 42"


def test_best_of_n_with_the_openai_sdk_streaming(start_proxy: StartProxy) -> None:
    import openai

    proxy = start_proxy(routes={"helped": route(best_of_n())})
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEYS["acme"], max_retries=0) as sdk:
        stream = sdk.chat.completions.create(model="helped", messages=user(), stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "The answer is 42"


@pytest.mark.parametrize(
    ("judge", "chosen", "verifier"), [("judge-3", 2, "judge"), ("judge-9", 0, "majority")]
)
def test_a_judge_model_picks_the_sample(
    start_proxy: StartProxy, judge: str, chosen: int, verifier: str
) -> None:
    spec = best_of_n(verifier="judge", judge={"upstream": "strong", "model": judge})
    proxy = start_proxy(routes={"helped": route(spec)})
    response = step(proxy)
    record = records(proxy, 1)[-1]["intervention"]
    assert (record["chosen"], record["verifier"]) == (chosen, verifier)
    expected = ["The answer is 42", "It is 41", "I think 42.", "7"][chosen]
    assert response.json()["choices"][0]["message"]["content"] == expected


def test_a_failing_best_of_n_is_refunded_and_the_base_answers(start_proxy: StartProxy) -> None:
    proxy = start_proxy(routes={"helped": route(best_of_n(model="error-500-samples"))})
    response = step(proxy)
    assert response.status_code == 200
    assert response.headers["x-escalator-action"] == "base"
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    wait_until(
        lambda: (
            httpx.get(f"{proxy.url}/v1/sessions/ep-1", headers=headers).json()["interventions_used"]
            == 0
        )
    )


def test_intervention_settings_are_checked(tmp_path: Any) -> None:
    def load(*interventions: dict[str, Any]) -> None:
        validate_settings(
            proxy_config(
                "http://127.0.0.1:9/v1",
                tmp_path,
                routes={
                    "r": {
                        "base": BASE,
                        "policy": {"kind": "always"},
                        "interventions": list(interventions),
                    }
                },
            )
        )

    with pytest.raises(ConfigError, match="needs a judge"):
        load(best_of_n(verifier="judge"))
    with pytest.raises(ConfigError, match="at most one intervention of each kind"):
        load(best_of_n(), best_of_n())
    with pytest.raises(ConfigError, match="greater than or equal to 2"):
        load(best_of_n(n=1))
    with pytest.raises(ConfigError, match="judge: unknown upstream 'nowhere'"):
        load(best_of_n(verifier="judge", judge={"upstream": "nowhere", "model": "j"}))


def test_a_prm_picks_the_sample_it_scores_highest(start_proxy: StartProxy, tmp_path: Any) -> None:
    import json

    # A toy PRM that prefers short answers: P(success) falls with the answer's length.
    (tmp_path / "helper.json").write_text(
        json.dumps(
            {
                "format": 1,
                "kind": "learned",
                "features": ["draft_chars"],
                "embedding": None,
                "weights": "weights.json",
                "thresholds": {"default": 0.5},
            }
        )
    )
    (tmp_path / "weights.json").write_text(json.dumps({"bias": 2.0, "features": [-0.2]}))
    proxy = start_proxy(routes={"helped": route(best_of_n(verifier="prm", prm=str(tmp_path)))})
    response = step(proxy)
    assert response.json()["choices"][0]["message"]["content"] == "7"
    record = records(proxy, 1)[-1]["intervention"]
    assert (record["chosen"], record["verifier"]) == (3, "prm")
    assert record["scores"][3] == max(record["scores"])


def test_a_prm_verifier_needs_a_valid_artifact(tmp_path: Any) -> None:
    routes = {
        "r": {
            "base": BASE,
            "policy": {"kind": "always"},
            "interventions": [best_of_n(verifier="prm", prm=str(tmp_path / "none"))],
        }
    }
    # The settings check its shape; the artifact is read once, when the plans are built.
    settings = validate_settings(proxy_config("http://127.0.0.1:9/v1", tmp_path, routes=routes))
    with pytest.raises(
        ConfigError, match=r"r\.interventions\.0\.best_of_n: prm: .*helper\.json: missing"
    ):
        load_plans(settings)
