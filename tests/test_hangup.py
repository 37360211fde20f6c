"""Clients that hang up in the middle of a streamed intervention: the charge follows what was
delivered. Once any of the answer (text, or its finish reason) has reached the client the
unit is kept, so a client cannot keep a strong answer for free by leaving before `[DONE]`;
a client that leaves before any of the answer arrived is refunded.

The strong upstream here sends the first few events of its answer and then pauses (until
the proxy closes the request), so the client decides exactly how much of it arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web

from tests.fake_upstream import FakeUpstream
from tests.helpers import records, user, wait_until
from tests.loopback import LoopbackServer
from tests.servers import KEYS, RunningProxy, proxy_config

AUTH = {"authorization": f"Bearer {KEYS['acme']}"}
C = 2  # acme's interventions per session (tests/servers.py)


def answer_events(model: str) -> list[bytes]:
    """A strong answer as an upstream streams it: role, text, finish reason, `[DONE]`."""
    head = {"id": "chatcmpl-pause", "object": "chat.completion.chunk", "created": 0}
    deltas: list[tuple[dict[str, str], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "The strong answer."}, None),
        ({}, "stop"),
    ]
    events = [
        {**head, "model": model, "choices": [{"index": 0, "delta": d, "finish_reason": f}]}
        for d, f in deltas
    ]
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


class PausingUpstream(LoopbackServer):
    """An OpenAI-compatible upstream whose model `pause-after-K` streams the first K events
    of its answer and then says nothing more until its client goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body["model"])
        sent = int(model.rpartition("-")[2])
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in answer_events(model)[:sent]:
                await response.write(event)
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app


@pytest.fixture
def pausing_upstream() -> Iterator[PausingUpstream]:
    upstream = PausingUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def proxy(
    fake_upstream: FakeUpstream, pausing_upstream: PausingUpstream, tmp_path: Path
) -> Iterator[RunningProxy]:
    """Routes `hang-up-K` escalate every step to a strong model that pauses after K
    events; the base model is the ordinary fake."""
    config = proxy_config(fake_upstream.base_url, tmp_path / "data")
    # Long enough that only the client's hang-up ends a paused answer.
    config["upstreams"]["strong"] = {"base_url": pausing_upstream.base_url, "timeout_s": 60}
    for sent in (1, 2, 3):
        config["routes"][f"hang-up-{sent}"] = {
            "base": {"upstream": "weak", "model": "weak-model"},
            "policy": {"kind": "always"},
            "interventions": [
                {"kind": "strong", "upstream": "strong", "model": f"pause-after-{sent}", "cost": 1}
            ],
        }
    config["routes"]["breaks-off"] = {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": "always"},
        "interventions": [
            {"kind": "strong", "upstream": "weak", "model": "die-mid-stream-strong", "cost": 1}
        ],
    }
    running = RunningProxy(config).start()
    yield running
    running.stop()


def hang_up_after(proxy: RunningProxy, route: str, events: int, session: str) -> list[bytes]:
    """Stream one step on `route`, read `events` SSE events, then close the connection."""
    received: list[bytes] = []
    with (
        httpx.Client(base_url=proxy.url, headers=AUTH, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            headers={"x-session-id": session},
            json={"model": route, "messages": user(), "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-escalator-action"] == "strong"
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line[6:].encode())
            if len(received) == events:
                break
    return received


def interventions_used(proxy: RunningProxy, session: str) -> int:
    answer = httpx.get(f"{proxy.url}/v1/sessions/{session}", headers=AUTH)
    return int(answer.json()["interventions_used"])


def noticed(pausing: PausingUpstream, hang_ups: int) -> Callable[[], bool]:
    """Every hung-up step has been noticed: its upstream request was closed."""
    return lambda: pausing.cancelled == hang_ups


@pytest.mark.parametrize(
    ("sent", "charged"),
    [
        (3, True),  # the whole answer and its finish reason, all but [DONE]
        (2, True),  # the text without its finish reason
        (1, False),  # only the role: nothing of the answer
    ],
)
def test_a_client_that_hangs_up_pays_for_what_reached_it(
    proxy: RunningProxy, pausing_upstream: PausingUpstream, sent: int, charged: bool
) -> None:
    route = f"hang-up-{sent}"
    for step in range(C):
        received = hang_up_after(proxy, route, sent, "ep-1")
        assert len(received) == sent
        wait_until(noticed(pausing_upstream, step + 1))
    wait_until(lambda: interventions_used(proxy, "ep-1") == (C if charged else 0))
    if charged:  # the budget is spent: the next step goes to the base model
        with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=30) as client:
            response = client.post(
                "/v1/chat/completions",
                headers={"x-session-id": "ep-1"},
                json={"model": route, "messages": user(), "stream": True},
            )
        assert response.status_code == 200
        assert response.headers["x-escalator-action"] == "base"
        assert response.text.endswith("data: [DONE]\n\n")


def test_an_answer_the_upstream_broke_off_is_charged_for_what_was_delivered(
    proxy: RunningProxy,
) -> None:
    """The same rule when the upstream, not the client, ends the stream early: the text
    that reached the client is paid for (a refund here would let a client provoke the
    upstream's timeout and keep most of a long strong answer for free)."""
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=30) as client:
        response = client.post(
            "/v1/chat/completions",
            headers={"x-session-id": "ep-1"},
            json={"model": "breaks-off", "messages": user(), "stream": True},
        )
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert orjson.loads(events[1])["choices"][0]["delta"]["content"]
    assert "error" in orjson.loads(events[-1])
    wait_until(lambda: interventions_used(proxy, "ep-1") == 1)


def test_a_client_that_hangs_up_before_an_answer_in_one_body_is_refunded(
    proxy: RunningProxy, pausing_upstream: PausingUpstream
) -> None:
    """Without streaming nothing of the answer reaches a client that leaves while the
    intervention answers: the unit comes back, and the step's record says it was not spent."""
    with (
        httpx.Client(base_url=proxy.url, headers=AUTH, timeout=0.5) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post(
            "/v1/chat/completions",
            headers={"x-session-id": "ep-1"},
            json={"model": "hang-up-3", "messages": user()},
        )
    wait_until(noticed(pausing_upstream, 1))
    wait_until(lambda: interventions_used(proxy, "ep-1") == 0)
    decision = records(proxy, 1)[-1]["decision"]
    assert decision["action"] == "strong"
    assert decision["budget_before"] == decision["budget_after"] == C
