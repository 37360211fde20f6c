"""A SIMULATED agent world with known critical states, for tests, CI and benchmarks.

No model runs here. An episode is a data-agent task of a few tool-calling steps. Most steps
are routine and either model gets them right; a *critical* step follows a failed tool call
(the observation shows the error) and the weak base model recovers from it far less often
than the strong intervention. A wrong answer at any step ends the episode as a failure.
Some tasks are *hopeless* (their observations say the source data is corrupted): they fail
whatever model answers, so an intervention there is wasted. The right policy escalates at
critical steps of solvable tasks and nowhere else; a PRM-threshold policy, which escalates
where P(success) is lowest, spends budget on hopeless tasks first.

The world writes step logs in the proxy's own format (DESIGN.md, "The step record"), with
the features the proxy computes, and runs any `router` policy online for ground truth.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.decision import BASE, BudgetView, Decision, finish_decision
from router.policies.base import Policy
from router.state import Message, StepState, extract_features

INTERVENTION = "strong"


@dataclass(frozen=True)
class WorldConfig:
    """The world's dynamics: how often steps are critical and how each model copes."""

    min_steps: int = 4
    max_steps: int = 9
    p_critical: float = 0.25  # P(a step after the first follows a failed tool call)
    p_hopeless: float = 0.15  # P(a task is unsolvable whatever answers)
    weak_critical: float = 0.30  # P(the base model recovers a critical step)
    strong_critical: float = 0.90
    weak_routine: float = 0.985
    strong_routine: float = 0.99
    hopeless_success: float = 0.03


@dataclass
class Episode:
    """One task being played: its hidden facts and its transcript so far."""

    index: int
    steps: int
    hopeless: bool
    rng: random.Random
    messages: list[Message] = field(default_factory=list)
    step: int = 0
    critical: bool = False  # the current step follows a failed tool call
    failed: bool = False

    @property
    def done(self) -> bool:
        return self.failed or self.step >= self.steps


class SimWorld:
    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()

    def new_episode(self, index: int, seed: int) -> Episode:
        rng = random.Random(f"{seed}/{index}")
        c = self.config
        episode = Episode(
            index=index,
            steps=rng.randint(c.min_steps, c.max_steps),
            hopeless=rng.random() < c.p_hopeless,
            rng=rng,
        )
        episode.messages = [
            {"role": "system", "content": "You are a data agent. Use the query tool."},
            {
                "role": "user",
                "content": f"Task {index}: reconcile ledger {rng.randint(100, 999)} "
                f"against the {rng.choice(['EU', 'US', 'APAC'])} payments export.",
            },
        ]
        return episode

    def act(self, episode: Episode, escalated: bool) -> None:
        """The step is answered by the base model or the intervention; move the world on."""
        message, right = sim_answer(episode.messages, escalated, self.config, episode.rng)
        self.observe(episode, message, right)

    def observe(self, episode: Episode, message: Message, right: bool) -> None:
        """The agent took the model's answer: a wrong one ends the episode, a right one
        runs the tool, whose result may be a failure the next step must recover from."""
        c = self.config
        rng = episode.rng
        episode.messages.append(message)
        episode.step += 1
        if not right:
            episode.failed = True
            return
        calls = message.get("tool_calls") or [{}]
        call_id = str(calls[0].get("id", f"call_{episode.step}"))
        table = _tool_arguments(message).get("table", "ledger")
        episode.critical = rng.random() < c.p_critical
        if episode.critical:
            result = (
                f"error: query on {table} failed: column 'amount_{rng.randint(1, 9)}' not found"
            )
        else:
            result = f"{rng.randint(1, 500)} rows from {table}; totals match so far"
        if episode.hopeless:
            result += "\nnote: source records are corrupted upstream"
        episode.messages.append({"role": "tool", "tool_call_id": call_id, "content": result})

    def succeeded(self, episode: Episode) -> bool:
        if episode.failed:
            return False
        if episode.hopeless:
            return episode.rng.random() < self.config.hopeless_success
        return True


def is_critical(messages: Sequence[Message]) -> bool:
    """A step is critical when the latest tool call failed (what the model sees)."""
    last = messages[-1] if messages else {}
    return last.get("role") == "tool" and str(last.get("content", "")).startswith("error:")


def sim_answer(
    messages: Sequence[Message], strong: bool, config: WorldConfig, rng: random.Random
) -> tuple[Message, bool]:
    """What a simulated model answers at this state, and whether it is right: the strong
    model recovers critical steps far more often. The verdict travels in the tool call's
    arguments (`ok`), so an agent talking to a simulated upstream over HTTP can read it."""
    if is_critical(messages):
        p_right = config.strong_critical if strong else config.weak_critical
    else:
        p_right = config.strong_routine if strong else config.weak_routine
    right = rng.random() < p_right
    step = sum(1 for m in messages if m.get("role") == "assistant")
    table = rng.choice(["payments", "ledger", "refunds", "fx_rates"])
    arguments = json.dumps({"table": table, "step": step, "ok": right})
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{step}",
                "type": "function",
                "function": {"name": "query", "arguments": arguments},
            }
        ],
    }
    return message, right


def answer_was_right(message: Message) -> bool:
    return _tool_arguments(message).get("ok") is True


def _tool_arguments(message: Message) -> dict[str, Any]:
    calls = message.get("tool_calls") or []
    try:
        arguments = json.loads(calls[0]["function"]["arguments"])
    except (IndexError, KeyError, TypeError, ValueError):
        return {}
    return arguments if isinstance(arguments, dict) else {}


Behaviour = Callable[[StepState, BudgetView, random.Random], Decision]


def random_behaviour(p: float) -> Behaviour:
    """Escalate with probability p, logging that propensity (how exploration data looks)."""

    def decide(state: StepState, budget: BudgetView, rng: random.Random) -> Decision:
        up = rng.random() < p
        return Decision(
            INTERVENTION if up else BASE, p, p if up else 1.0 - p, f"random@{p:g}", "random"
        )

    return decide


def policy_behaviour(policy: Policy, exploration: float = 0.0) -> Behaviour:
    """A router policy as the proxy runs it: its decision, then budget and exploration."""

    def decide(state: StepState, budget: BudgetView, rng: random.Random) -> Decision:
        return finish_decision(policy.decide(state, budget), budget, INTERVENTION, exploration, rng)

    return decide


@dataclass(frozen=True)
class Rollout:
    success: bool
    interventions: int
    steps: int
    critical_steps: int
    escalations_at_critical: int
    records: list[dict[str, Any]]


def play(
    world: SimWorld,
    behaviour: Behaviour,
    index: int,
    seed: int,
    budget: int,
    tenant: str = "sim",
    route: str = "agent",
    log: bool = False,
) -> Rollout:
    """Play one episode under a behaviour; with `log`, also return its step records."""
    episode = world.new_episode(index, seed)
    decide_rng = random.Random(f"decide/{seed}/{index}")
    session = f"sim-{seed}-{index}"
    used = critical_steps = at_critical = 0
    records: list[dict[str, Any]] = []
    while not episode.done:
        view = BudgetView(limit=budget, used=used, cheapest_cost=1)
        features = extract_features(episode.messages, episode.step)
        features["prior_escalations"] = float(used)
        state = StepState(tenant, session, episode.step, route, list(episode.messages), features)
        decision = behaviour(state, view, decide_rng)
        if not view.can_intervene and decision.escalates:
            decision = Decision(BASE, decision.p_escalate, 1.0, decision.policy_id, "budget")
        escalated = decision.escalates
        critical_steps += episode.critical
        at_critical += escalated and episode.critical and not episode.hopeless
        if log:
            records.append(step_record(state, decision, view, escalated))
        used += escalated
        world.act(episode, escalated)
    success = world.succeeded(episode)
    if log:
        records.append(
            {
                "schema": 1,
                "kind": "outcome",
                "ts": 0.0,
                "tenant": tenant,
                "session": session,
                "success": success,
                "reward": float(success),
            }
        )
    return Rollout(success, used, episode.step, critical_steps, at_critical, records)


def step_record(
    state: StepState,
    decision: Decision,
    view: BudgetView,
    escalated: bool,
    answer: Message | None = None,
) -> dict[str, Any]:
    """A simulated step as the proxy logs it; with `answer`, the model's message as its
    captured response. (Every simulated harness writes its steps with this.)"""
    record: dict[str, Any] = {
        "schema": 1,
        "kind": "step",
        "id": f"{state.session}-{state.step}",
        "ts": float(state.step),
        "tenant": state.tenant,
        "session": state.session,
        "step": state.step,
        "route": state.route,
        "state": {"messages": list(state.messages), "features": state.features},
        "decision": {
            "action": decision.action,
            "p_escalate": round(decision.p_escalate, 6),
            "propensity": round(decision.propensity, 6),
            "explored": decision.explored,
            "policy": decision.policy_id,
            "reason": decision.reason,
            "budget_before": view.remaining,
            "budget_after": view.remaining - escalated,
        },
        "upstream": {"name": "strong" if escalated else "weak", "model": "simulated"},
    }
    if answer:
        record["response"] = {
            "content": answer.get("content"),
            "tool_calls": answer.get("tool_calls"),
        }
    return record


def write_logs(
    directory: str | Path,
    episodes: int,
    seed: int = 0,
    budget: int = 3,
    rates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5),
    world: SimWorld | None = None,
    compress: bool = False,
    segment_sessions: int = 5_000,
) -> int:
    """Exploration logs: each session escalates at random with a rate from `rates` (the
    simulator's sweep of escalation rates, DESIGN.md). Returns the number of steps written."""
    world = world or SimWorld()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for first in range(0, episodes, segment_sessions):
        name = f"sim-{seed}-{first // segment_sessions:05d}.jsonl" + (".gz" if compress else "")
        opener: Any = gzip.open if compress else open
        with opener(directory / name, "wt") as handle:
            for index in range(first, min(first + segment_sessions, episodes)):
                behaviour = random_behaviour(rates[index % len(rates)])
                rollout = play(world, behaviour, index, seed, budget, log=True)
                for record in rollout.records:
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                written += rollout.steps
    return written


def evaluate(
    world: SimWorld, behaviour: Behaviour, episodes: int, seed: int, budget: int
) -> dict[str, float]:
    """Ground truth for a behaviour: success rate, interventions per episode, and the share
    of its escalations spent at critical steps of solvable tasks."""
    rollouts = list(_rollouts(world, behaviour, episodes, seed, budget))
    used = sum(r.interventions for r in rollouts)
    return {
        "success": sum(r.success for r in rollouts) / episodes,
        "interventions": used / episodes,
        "at_critical": sum(r.escalations_at_critical for r in rollouts) / used if used else 0.0,
    }


def _rollouts(
    world: SimWorld, behaviour: Behaviour, episodes: int, seed: int, budget: int
) -> Iterator[Rollout]:
    for index in range(episodes):
        yield play(world, behaviour, index, seed, budget)
