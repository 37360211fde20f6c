"""The project's own simulated data agent (demo/sim/world.py) through the worlds harness.

A tool-calling agent: its observations are `tool` messages, and a step is hard when it
follows a failed tool call (the observation starts with "error:") in a task that is not
hopeless. The weak model's wrong answer ends the episode at once, so nothing is silent.
This is the workload the current helper was built on; it stays in the benchmark so a new
trainer is seen not to lose it. Its step reward is a share of the task's steps for every
right answer, as a tool that reports rows processed would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from demo.sim.world import Episode as SimEpisode
from demo.sim.world import SimWorld, WorldConfig
from router.state import Message


@dataclass
class DataAgentEpisode:
    inner: SimEpisode

    @property
    def messages(self) -> Sequence[Message]:
        return self.inner.messages

    @property
    def step(self) -> int:
        return self.inner.step

    @property
    def done(self) -> bool:
        return self.inner.done

    @property
    def hard(self) -> bool:
        # An escalation pays off only where the task can still succeed.
        return self.inner.critical and not self.inner.hopeless


class DataAgentWorld:
    name = "dataagent"

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.sim = SimWorld(config)

    def new_episode(self, index: int, seed: int) -> DataAgentEpisode:
        return DataAgentEpisode(self.sim.new_episode(index, seed))

    def act(self, episode: DataAgentEpisode, escalated: bool) -> float:
        self.sim.act(episode.inner, escalated)
        return 0.0 if episode.inner.failed else 1.0 / episode.inner.steps

    def succeeded(self, episode: DataAgentEpisode) -> bool:
        return self.sim.succeeded(episode.inner)
