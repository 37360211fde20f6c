"""Episodes played against the proxy: one session per task, the outcome reported at the end.

A workload knows how to play one task through a route of a running proxy and whether it
succeeded; the demo loop only counts. `SimWorkload` plays the SIMULATED world
(demo/sim/world.py) against simulated upstreams; `demo/gym.py` has the real one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import httpx

from demo.sim.world import SimWorld, answer_was_right

QUERY_TOOL = {
    "type": "function",
    "function": {
        "name": "query",
        "description": "Run a query against a table of the payments warehouse.",
        "parameters": {
            "type": "object",
            "properties": {"table": {"type": "string"}},
            "required": ["table"],
        },
    },
}


@dataclass(frozen=True)
class EpisodeResult:
    success: bool
    steps: int
    interventions: int
    eligible_steps: int  # steps that began with budget left for an intervention


class Workload(Protocol):
    name: str

    def play(
        self, proxy_url: str, api_key: str, route: str, index: int, seed: int
    ) -> EpisodeResult:
        """Play task `index` of the task family seeded `seed` through `route`."""
        ...


def report_outcome(
    client: httpx.Client, session: str, success: bool, reward: float | None = None
) -> None:
    answer = client.post(
        f"/v1/sessions/{session}/outcome",
        json={"success": success, "reward": float(success) if reward is None else reward},
    )
    answer.raise_for_status()


def escalated(response: httpx.Response) -> bool:
    return response.headers.get("x-escalator-action", "base") not in ("base", "none")


def had_budget(response: httpx.Response) -> bool:
    """Whether the step began with budget left (what remained after it, plus its own)."""
    after = response.headers.get("x-escalator-budget-remaining", "none")
    return after.isdigit() and int(after) + escalated(response) >= 1


class SimWorkload:
    """The simulated data-agent world, played step by step through the proxy."""

    name = "simulated world"

    def __init__(self, world: SimWorld | None = None) -> None:
        self.world = world or SimWorld()

    def play(
        self, proxy_url: str, api_key: str, route: str, index: int, seed: int
    ) -> EpisodeResult:
        episode = self.world.new_episode(index, seed)
        session = f"sim-{seed}-{index}-{uuid.uuid4().hex[:8]}"
        headers = {"authorization": f"Bearer {api_key}", "x-session-id": session}
        used = eligible = 0
        with httpx.Client(base_url=proxy_url, headers=headers, timeout=30) as client:
            while not episode.done:
                response = client.post(
                    "/v1/chat/completions",
                    json={"model": route, "messages": episode.messages, "tools": [QUERY_TOOL]},
                )
                response.raise_for_status()
                message = response.json()["choices"][0]["message"]
                used += escalated(response)
                eligible += had_budget(response)
                self.world.observe(episode, message, answer_was_right(message))
            success = self.world.succeeded(episode)
            report_outcome(client, session, success)
        return EpisodeResult(success, episode.step, used, eligible)
