"""Routed requests: the fields the proxy relies on (`n` within the route's `max_n`, an integer
`max_tokens` of at least 1, known message roles) are checked with a 400 naming the parameter
before anything is decided, budgeted or sent; every other field, and pass-through requests,
reach the upstream unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import user
from tests.servers import KEYS, RunningProxy

SESSION = {"x-session-id": "ep-fields"}


def refused(client: httpx.Client, param: str, **fields: Any) -> dict[str, Any]:
    body = {"model": "always", "messages": user(), **fields}
    response = client.post("/v1/chat/completions", headers=SESSION, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    return dict(error)


def test_a_thousand_choices_with_negative_max_tokens_buy_nothing(
    client: httpx.Client, fake_upstream: FakeUpstream
) -> None:
    sent = len(fake_upstream.log.requests)
    error = refused(client, "n", n=1000, max_tokens=-5)
    assert "1 to 8" in error["message"]
    assert len(fake_upstream.log.requests) == sent
    assert client.get("/v1/sessions/ep-fields").status_code == 404  # no step, no unit


@pytest.mark.parametrize("n", [0, -1, 9, "2", 1.5, True])
def test_n_outside_the_route_limit_is_refused(client: httpx.Client, n: Any) -> None:
    refused(client, "n", n=n)


@pytest.mark.parametrize("field", [{"n": 2.0}, {"max_tokens": 16.0}])
def test_an_integral_number_is_an_integer(client: httpx.Client, field: dict[str, Any]) -> None:
    """As JSON Schema (and OpenAI's specification) count integers: 2.0 is one."""
    body = {"model": "agent", "messages": user(), **field}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [-5, 0, "10", 2.5, False])
def test_max_tokens_must_be_a_positive_integer(
    client: httpx.Client, param: str, value: Any
) -> None:
    refused(client, param, **{param: value})


def test_an_unknown_role_is_refused(client: httpx.Client) -> None:
    messages = [*user(), {"role": "robot", "content": "beep"}]
    error = refused(client, "messages[1].role", messages=messages)
    assert "'robot'" in error["message"]


def test_max_n_is_set_per_route(
    start_proxy: Callable[..., RunningProxy], fake_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(
        routes={
            "pairs": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "always"},
                "interventions": [
                    {"kind": "strong", "upstream": "strong", "model": "strong-model"}
                ],
                "max_n": 2,
            }
        }
    )
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    with httpx.Client(base_url=proxy.url, headers=headers) as client:
        body: dict[str, Any] = {"model": "pairs", "messages": user()}
        assert client.post("/v1/chat/completions", json={**body, "n": 2}).status_code == 200
        assert fake_upstream.log.requests[-1]["n"] == 2
        response = client.post("/v1/chat/completions", json={**body, "n": 3})
        assert response.status_code == 400
        assert "1 to 2" in response.json()["error"]["message"]


def test_valid_fields_reach_the_upstream_unchanged(
    client: httpx.Client, fake_upstream: FakeUpstream
) -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        *user(),
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "4"},
    ]
    fields = {"n": 8, "max_tokens": 5, "max_completion_tokens": None, "top_k": -1}
    response = client.post(
        "/v1/chat/completions", json={"model": "always", "messages": messages, **fields}
    )
    assert response.status_code == 200
    assert len(response.json()["choices"]) == 8
    assert fake_upstream.log.requests[-1] == {
        "model": "strong-model",
        "messages": messages,
        **fields,
    }


def test_pass_through_requests_are_not_checked_beyond_their_shape(
    client: httpx.Client, fake_upstream: FakeUpstream
) -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "robot", "content": "beep"}],
        "n": 9,
        "max_tokens": -5,
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200  # the upstream is the judge of its own fields
    assert fake_upstream.log.requests[-1] == body
