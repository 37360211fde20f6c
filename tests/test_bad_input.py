"""Bodies the proxy cannot act on are a 400 naming the parameter, never a 500; and a step
record that cannot be written is counted with its reason, never dropped unseen."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import metric, records, user, wait_until
from tests.servers import RunningProxy

SESSION = {"x-session-id": "ep-deep"}


def nested(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = [value]
    return value


def deep_message(levels: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": nested(levels)}]


def deep_body(model: str, levels: int, stream: bool = False) -> bytes:
    """Written by hand: JSON encoders refuse to write this deep."""
    content = b"[" * levels + b'"deep"' + b"]" * levels
    return b'{"model": "%s", "stream": %s, "messages": [{"role": "user", "content": %s}]}' % (
        model.encode(),
        b"true" if stream else b"false",
        content,
    )


def assert_400(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "nested more than" in error["message"]


@pytest.mark.parametrize("levels", [252, 300, 1_000])
@pytest.mark.parametrize("stream", [False, True])
def test_content_nested_too_deep_on_a_route_is_a_400(
    client: httpx.Client, fake_upstream: FakeUpstream, levels: int, stream: bool
) -> None:
    sent = len(fake_upstream.log.requests)
    response = client.post(
        "/v1/chat/completions",
        headers=SESSION,
        content=deep_body("always", levels, stream),
    )
    assert_400(response, "messages[0].content")
    assert len(fake_upstream.log.requests) == sent  # nothing was sent upstream
    assert client.get("/v1/sessions/ep-deep").status_code == 404  # nor a step begun


def test_any_parameter_nested_too_deep_is_named(client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": nested(300)}}]
    response = client.post(
        "/v1/chat/completions", json={"model": "always", "messages": user(), "tools": tools}
    )
    assert_400(response, "tools[0].function")


def test_content_as_deep_as_the_log_can_hold_is_served_and_logged(
    client: httpx.Client, proxy: RunningProxy
) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "always", "messages": deep_message(250)}
    )
    assert response.status_code == 200
    assert response.headers["x-escalator-action"] == "strong"
    assert records(proxy, 1)[-1]["state"]["messages"] == deep_message(250)


def test_a_passed_through_step_too_deep_to_log_is_served_and_its_drop_counted(
    client: httpx.Client,
) -> None:
    response = client.post("/v1/chat/completions", content=deep_body("echo", 1_000))
    assert response.status_code == 200  # passed through unchanged: the upstream judges it
    wait_until(lambda: metric(client, "escalator_log_dropped_total", reason="unwritable") == 1)
    assert metric(client, "escalator_log_dropped_total", reason="queue_full") == 0


@pytest.mark.parametrize("text", [5, None, ["a", "b"], {"text": "x"}])
def test_a_text_part_that_is_not_a_string_is_a_400_on_a_route(
    client: httpx.Client, fake_upstream: FakeUpstream, text: Any
) -> None:
    sent = len(fake_upstream.log.requests)
    content = [{"type": "text", "text": "fine"}, {"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    response = client.post(
        "/v1/chat/completions", json={"model": "agent", "messages": messages}, headers=SESSION
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[1].text" and "string" in error["message"]
    assert len(fake_upstream.log.requests) == sent  # nothing sent, nothing decided
    assert client.get("/v1/sessions/ep-deep").status_code == 404  # no step begun


def test_a_text_part_that_is_not_a_string_passes_through_unchanged(
    client: httpx.Client, fake_upstream: FakeUpstream
) -> None:
    """A pass-through model is the upstream's to judge: the proxy reads nothing in it."""
    messages = [{"role": "user", "content": [{"type": "text", "text": 5}]}]
    response = client.post("/v1/chat/completions", json={"model": "echo", "messages": messages})
    assert response.status_code == 200
    assert fake_upstream.log.requests[-1]["messages"] == messages
