"""The harness every SIMULATED world runs in: play an episode under a behaviour, write the
proxy's step logs, measure the ground truth.

A world is a task environment with two simulated models (the weak base model and the
strong intervention) whose chance of answering a step rightly depends on a HIDDEN
difficulty of that step. An episode shows the agent's transcript (`messages`) exactly as an
agent would send it to the proxy, and keeps its hidden `hard` flag for the oracle and for
statistics only: nothing the harness writes or a policy sees carries it.

`play` produces the records the proxy itself would write (DESIGN.md, "The step record"): a
step record per step with the features the proxy computes, an outcome record per session,
and, with `step_rewards`, one feedback record per step whose environment reward is nonzero,
as an environment reporting progress to `POST /v1/sessions/{id}/feedback` would. On an
escalated step of a world that can say how each model answers it (`answers`), an agreement
record, as the proxy's agreement check writes (server/agreement.py).

Data collection mimics a tenant with exploration ε on the `never` policy: each step with
budget left escalates with probability ε (logged propensity ε, `explored`), else stays on
the base model (propensity 1 - ε); a step without budget stays on base with propensity 1.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from demo.sim.world import Behaviour, policy_behaviour, random_behaviour, step_record
from router.decision import BASE, BudgetView, Decision
from router.state import Message, StepState

__all__ = [
    "INTERVENTION",
    "Behaviour",
    "Competence",
    "Episode",
    "Oracle",
    "Rollout",
    "World",
    "answers_rightly",
    "evaluate",
    "exploring_never",
    "oracle_behaviour",
    "play",
    "policy_behaviour",
    "random_behaviour",
    "write_logs",
]

INTERVENTION = "strong"


class Episode(Protocol):
    """One task being played: what the agent has seen so far, and the hidden difficulty."""

    @property
    def messages(self) -> Sequence[Message]: ...

    @property
    def step(self) -> int: ...

    @property
    def done(self) -> bool: ...

    @property
    def hard(self) -> bool:
        """The current step is one where the weak model often errs (hidden)."""
        ...


E = TypeVar("E", bound=Episode)


class World(Protocol[E]):
    """A task environment with simulated weak and strong models."""

    name: str

    def new_episode(self, index: int, seed: int) -> E: ...

    def act(self, episode: E, escalated: bool) -> float:
        """The step is answered by the base model or the intervention; the world moves on.
        Returns the step's environment reward (progress, like a game's score increment)."""
        ...

    def succeeded(self, episode: E) -> bool: ...


class Competence(Protocol):
    """How often each simulated model answers a step rightly, by its hidden difficulty."""

    @property
    def weak_hard(self) -> float: ...
    @property
    def strong_hard(self) -> float: ...
    @property
    def weak_routine(self) -> float: ...
    @property
    def strong_routine(self) -> float: ...


def answers_rightly(
    competence: Competence, rng: random.Random, hard: bool, escalated: bool
) -> bool:
    """Whether the model that answers the step (the strong one when escalated) gets it right:
    one draw from `rng`."""
    if hard:
        p_right = competence.strong_hard if escalated else competence.weak_hard
    else:
        p_right = competence.strong_routine if escalated else competence.weak_routine
    return rng.random() < p_right


def simulated_answers(
    competence: Competence, seed: str, step: int, hard: bool
) -> tuple[bool, bool]:
    """Whether the intervention and the base model answer a step rightly when both are asked
    it (an escalated step and its agreement check): the intervention's is the world's own
    first draw for the step (the worlds draw it first from `Random(f"{seed}/{step}")`), the
    base model's an independent draw. Two right answers agree; two wrong ones are taken to
    differ."""
    delivered = answers_rightly(competence, random.Random(f"{seed}/{step}"), hard, True)
    base = answers_rightly(competence, random.Random(f"agreement/{seed}/{step}"), hard, False)
    return delivered, base


@dataclass(frozen=True)
class Oracle:
    """Escalates exactly at the hidden hard steps while budget lasts: the ceiling a helper
    could reach with perfect knowledge of where the weak model fails. It reads what no
    helper can, so `play` hands it the hidden flag. With `share` < 1 it escalates at each
    hard step with that probability: the same knowledge spent at a lower usage."""

    share: float = 1.0
    policy_id: str = "oracle"

    def decide(self, hard: bool, budget: BudgetView, rng: random.Random) -> Decision:
        if hard and budget.can_intervene and (self.share >= 1.0 or rng.random() < self.share):
            return Decision(INTERVENTION, 1.0, self.share, self.policy_id, "oracle")
        return Decision(BASE, float(hard), 1.0, self.policy_id, "oracle")


def oracle_behaviour(share: float = 1.0) -> Oracle:
    return Oracle(share)


def exploring_never(epsilon: float) -> Behaviour:
    """A tenant with exploration ε on the `never` policy, under the session's hard budget."""

    def decide(state: StepState, budget: BudgetView, rng: random.Random) -> Decision:
        if not budget.can_intervene:
            return Decision(BASE, 0.0, 1.0, "never", "budget")
        if rng.random() < epsilon:
            return Decision(INTERVENTION, 0.0, epsilon, "never", "exploration", explored=True)
        return Decision(BASE, 0.0, 1.0 - epsilon, "never", "never")

    return decide


@dataclass(frozen=True)
class Rollout:
    success: bool
    interventions: int
    steps: int
    hard_steps: int
    escalations_at_hard: int
    reward: float  # the step rewards summed
    records: list[dict[str, Any]]


def play(
    world: World[E],
    behaviour: Behaviour | Oracle,
    index: int,
    seed: int,
    budget: int,
    *,
    tenant: str = "sim",
    route: str = "agent",
    log: bool = False,
    step_rewards: bool = False,
    base_checks: float = 0.0,
) -> Rollout:
    """Play one episode under a behaviour; with `log`, also return its records, with an
    agreement check on every escalated step and on a `base_checks` share of the others (as
    the proxy checks, server/agreement_checks.py)."""
    from router.state import extract_features  # at call time: the current feature set

    episode = world.new_episode(index, seed)
    decide_rng = random.Random(f"decide/{seed}/{index}")
    check_rng = random.Random(f"check/{seed}/{index}")
    session = f"{world.name}-{seed}-{index}"
    used = hard_steps = at_hard = 0
    total = 0.0
    records: list[dict[str, Any]] = []
    while not episode.done:
        view = BudgetView(limit=budget, used=used, cheapest_cost=1)
        messages = list(episode.messages)
        features = extract_features(messages, episode.step)
        features["prior_escalations"] = float(used)
        state = StepState(tenant, session, episode.step, route, messages, features)
        hard = episode.hard
        if isinstance(behaviour, Oracle):
            decision = behaviour.decide(hard, view, decide_rng)
        else:
            decision = behaviour(state, view, decide_rng)
        if not view.can_intervene and decision.escalates:
            decision = Decision(BASE, decision.p_escalate, 1.0, decision.policy_id, "budget")
        escalated = decision.escalates
        hard_steps += hard
        at_hard += escalated and hard
        used += escalated
        checked = escalated or (base_checks > 0 and check_rng.random() < base_checks)
        answers = getattr(world, "answers", None) if checked else None
        agreed = float(all(answers(episode))) if answers is not None else None  # before acting
        reward = world.act(episode, escalated)
        total += reward
        if log:
            after = episode.messages
            answer: Message = after[len(messages)] if len(after) > len(messages) else {}
            record = step_record(state, decision, view, escalated, answer)
            records.append(record)
            if agreed is not None:
                records.append(_agreement_record(state, record["id"], agreed))
            if step_rewards and reward != 0.0:
                records.append(_feedback_record(state, record["id"], reward))
    success = world.succeeded(episode)
    if log:
        records.append(
            {
                "schema": 1,
                "kind": "outcome",
                "ts": float(episode.step),
                "tenant": tenant,
                "session": session,
                "success": success,
                "reward": float(success),
            }
        )
    return Rollout(success, used, episode.step, hard_steps, at_hard, total, records)


def _agreement_record(state: StepState, request_id: str, agreed: float) -> dict[str, Any]:
    return {
        "schema": 1,
        "kind": "agreement",
        "ts": float(state.step),
        "tenant": state.tenant,
        "session": state.session,
        "step": state.step,
        "request_id": request_id,
        "agreement": agreed,
    }


def _feedback_record(state: StepState, request_id: str, reward: float) -> dict[str, Any]:
    return {
        "schema": 1,
        "kind": "feedback",
        "ts": state.step + 0.5,
        "tenant": state.tenant,
        "session": state.session,
        "step": state.step,
        "request_id": request_id,
        "reward": round(reward, 6),
    }


def write_logs(
    directory: str | Path,
    world: World[Any],
    episodes: int,
    seed: int = 0,
    budget: int = 4,
    *,
    exploration: float = 0.3,
    behaviour_factory: Callable[[int], Behaviour] | None = None,
    step_rewards: bool = False,
    segment_sessions: int = 5_000,
    base_checks: float | None = None,
) -> int:
    """Logs of `episodes` sessions as the proxy writes them. Each session runs
    `behaviour_factory(index)` when given, else the exploring `never` tenant, whose base steps
    are checked at `base_checks` (default: the exploration rate, the proxy's default).
    Returns the number of steps written."""
    if base_checks is None:
        base_checks = 0.0 if behaviour_factory else exploration
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for first in range(0, episodes, segment_sessions):
        path = directory / f"{world.name}-{seed}-{first // segment_sessions:05d}.jsonl"
        with path.open("w") as handle:
            for index in range(first, min(first + segment_sessions, episodes)):
                behaviour = (
                    behaviour_factory(index) if behaviour_factory else exploring_never(exploration)
                )
                rollout = play(
                    world,
                    behaviour,
                    index,
                    seed,
                    budget,
                    log=True,
                    step_rewards=step_rewards,
                    base_checks=base_checks,
                )
                for record in rollout.records:
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                written += rollout.steps
    return written


def evaluate(
    world: World[Any], behaviour: Behaviour | Oracle, episodes: int, seed: int, budget: int
) -> dict[str, float]:
    """Ground truth for a behaviour on fresh episodes: success rate, interventions and hard
    steps per episode, and the share of its escalations spent at hard steps."""
    rollouts = [play(world, behaviour, index, seed, budget) for index in range(episodes)]
    used = sum(r.interventions for r in rollouts)
    n = max(episodes, 1)
    return {
        "episodes": float(episodes),
        "success": sum(r.success for r in rollouts) / n,
        "interventions": used / n,
        "at_hard": sum(r.escalations_at_hard for r in rollouts) / used if used else 0.0,
        "hard_steps": sum(r.hard_steps for r in rollouts) / n,
        "steps": sum(r.steps for r in rollouts) / n,
    }
