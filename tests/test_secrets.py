"""An upstream's own API key and address stay upstream: an error that quotes the key, a
passed-through header that carries it, or an unreachable upstream's address never reach the
tenant or the step log; the operator's log keeps the detail."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.fake_upstream import FakeUpstream, FakeUpstreamLog, make_app
from tests.helpers import records, user
from tests.servers import KEYS, RunningProxy

StartProxy = Callable[..., RunningProxy]
UPSTREAM_KEY = "sk-upstream-0123456789abcdef"
MASKED_KEY = UPSTREAM_KEY[:10] + "*" * 12 + UPSTREAM_KEY[-4:]


def leaky_app() -> web.Application:
    """The fake upstream, plus models whose errors quote the caller's credentials:
    `leak-401` (the Authorization header, and the key in a rate-limit header),
    `leak-429` (the key masked as OpenAI masks it), `leak-500` (the header, as a 5xx),
    `leak-200` (an answer repeating the header)."""
    fake = make_app(FakeUpstreamLog()).router.routes()

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        auth = request.headers.get("authorization", "")
        model = str(body.get("model"))
        if model == "leak-401":
            return web.json_response(
                {"error": {"message": f"Incorrect API key provided: {auth}"}},
                status=401,
                headers={"x-ratelimit-reset-requests": auth.removeprefix("Bearer ")},
            )
        if model == "leak-429":
            return web.json_response(
                {"error": {"message": f"Rate limit reached for key {MASKED_KEY}."}},
                status=429,
                headers={"retry-after": "3"},
            )
        if model == "leak-500":
            return web.json_response({"error": f"upstream auth {auth} failed"}, status=500)
        if model == "leak-200":  # an answer that repeats the credentials it was sent with
            text = f"You called me with {auth}."
            if body.get("stream"):
                chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
                raw = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
                return web.Response(body=raw, content_type="text/event-stream")
            answer = {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
            return web.json_response(answer)
        handler = next(r.handler for r in fake if r.method == "POST")
        return await handler(request)

    leaky = web.Application()
    leaky.router.add_post("/v1/chat/completions", completions)
    return leaky


class LeakyUpstream(FakeUpstream):
    def app(self) -> web.Application:
        return leaky_app()


@pytest.fixture(scope="module")
def leaky_upstream() -> Iterator[LeakyUpstream]:
    upstream = LeakyUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def leaky_proxy(
    start_proxy: StartProxy, leaky_upstream: LeakyUpstream, monkeypatch: pytest.MonkeyPatch
) -> RunningProxy:
    monkeypatch.setenv("STRONG_UPSTREAM_KEY", UPSTREAM_KEY)

    def route(base: str) -> dict[str, Any]:
        return {"base": {"upstream": "strong", "model": base}, "policy": {"kind": "never"}}

    return start_proxy(
        upstreams={
            "strong": {
                "base_url": leaky_upstream.base_url,
                "api_key_env": "STRONG_UPSTREAM_KEY",
                "timeout_s": 5,
            },
            "gone": {"base_url": "http://127.0.0.1:1/v1", "connect_timeout_s": 5},
        },
        routes={
            "rejected": route("leak-401"),
            "limited": route("leak-429"),
            "failing": route("leak-500"),
            "echoing": route("leak-200"),
            "rescued": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "always"},
                "interventions": [{"kind": "strong", "upstream": "strong", "model": "leak-500"}],
            },
            "unreachable": {
                "base": {"upstream": "gone", "model": "m"},
                "policy": {"kind": "never"},
            },
        },
    )


def step(proxy: RunningProxy, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {KEYS['acme']}"},
        json={"model": model, "messages": user(), **extra},
        timeout=30,
    )


def assert_no_key(text: str | bytes) -> None:
    text = text if isinstance(text, str) else text.decode()
    assert UPSTREAM_KEY not in text
    assert UPSTREAM_KEY[:10] not in text  # nor the masked form's visible part


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_rejection_quoting_its_key_reaches_the_tenant_redacted(
    leaky_proxy: RunningProxy, stream: bool
) -> None:
    response = step(leaky_proxy, "rejected", stream=stream)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"].startswith("Incorrect API key provided: Bearer [redacted]")
    assert_no_key(response.text)
    assert_no_key(orjson.dumps(dict(response.headers)))
    assert response.headers["x-ratelimit-reset-requests"] == "[redacted]"
    assert_no_key(orjson.dumps(records(leaky_proxy, 1)))


def test_a_masked_key_is_redacted_and_retry_after_still_passes(
    leaky_proxy: RunningProxy,
) -> None:
    response = step(leaky_proxy, "limited")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["message"] == "Rate limit reached for key [redacted]."


def test_a_5xx_quoting_the_key_is_redacted_for_the_tenant_and_the_step_log(
    leaky_proxy: RunningProxy,
) -> None:
    failed = step(leaky_proxy, "failing")
    assert failed.status_code == 502
    assert "[redacted]" in failed.json()["error"]["message"]
    assert_no_key(failed.text)
    # An intervention that failed this way is retried on the base model and logged.
    rescued = step(leaky_proxy, "rescued")
    assert rescued.status_code == 200
    logged = records(leaky_proxy, 2)
    assert "[redacted]" in logged[-1]["failed_intervention"]["error"]
    assert_no_key(orjson.dumps(logged))


def test_an_unreachable_upstream_is_named_not_located(
    leaky_proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="escalator.upstreams"):
        response = step(leaky_proxy, "unreachable")
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "upstream `gone` unreachable"
    assert "127.0.0.1" not in response.text
    logged = records(leaky_proxy, 1)[-1]
    assert "127.0.0.1" not in orjson.dumps(logged).decode()
    # The operator's log keeps where it was and why.
    assert any("127.0.0.1:1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_repeating_the_upstreams_key_reaches_the_tenant_redacted(
    leaky_proxy: RunningProxy, stream: bool
) -> None:
    response = step(leaky_proxy, "echoing", stream=stream)
    assert response.status_code == 200
    assert "You called me with Bearer [redacted]." in response.text
    assert_no_key(response.text)
