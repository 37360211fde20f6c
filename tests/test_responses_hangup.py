"""A streamed response whose client hangs up: the charge follows what was delivered, as for
a chat stream (tests/test_hangup.py, whose pausing strong upstream this reuses). Events the
proxy makes before the answer (`response.created`, `response.in_progress`) are not the
answer: a client that leaves after them is refunded; one that got text pays."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import wait_until
from tests.servers import RunningProxy
from tests.test_hangup import (  # noqa: F401  (fixtures)
    AUTH,
    PausingUpstream,
    interventions_used,
    noticed,
    pausing_upstream,
    proxy,
)
from tests.test_responses import steps


def hang_up_after(proxy: RunningProxy, route: str, events: int, session: str) -> list[str]:  # noqa: F811
    """Stream one response on `route`, read `events` events, then close the connection."""
    received: list[str] = []
    with (
        httpx.Client(base_url=proxy.url, headers=AUTH, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/responses",
            headers={"x-session-id": session},
            json={"model": route, "input": "hi", "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-escalator-action"] == "strong"
        for line in response.iter_lines():
            if line.startswith("event: "):
                received.append(line[7:])
            if len(received) == events:
                break
    return received


@pytest.mark.parametrize(
    ("sent", "read", "charged"),
    [
        (2, 5, True),  # the upstream's text became added, part added and a text delta
        (1, 2, False),  # only the role: the client saw created and in_progress
    ],
)
def test_a_client_that_hangs_up_on_a_response_pays_for_what_reached_it(
    proxy: RunningProxy,  # noqa: F811
    pausing_upstream: PausingUpstream,  # noqa: F811
    sent: int,
    read: int,
    charged: bool,
) -> None:
    received = hang_up_after(proxy, f"hang-up-{sent}", read, "ep-r")
    assert received[:2] == ["response.created", "response.in_progress"]
    if charged:
        assert received[-1] == "response.output_text.delta"
    wait_until(noticed(pausing_upstream, 1))
    (record,) = steps(proxy, 1)  # one step, logged once, after its budget was settled
    assert record["upstream"]["error"] == "client disconnected"
    wait_until(lambda: interventions_used(proxy, "ep-r") == (1 if charged else 0))
    assert interventions_used(proxy, "ep-r") == (1 if charged else 0)
