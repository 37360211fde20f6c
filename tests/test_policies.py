"""Policies, the budget's feasibility, and exploration's logged propensities."""

from __future__ import annotations

import random

import pytest

from router.decision import BASE, BudgetView, Decision, finish_decision
from router.policies import PolicyConfigError, PolicyContext, build_policy, policy_kinds
from router.state import StepState, extract_features

CONTEXT = PolicyContext(route="agent", intervention="strong", seed=7)
ROOMY = BudgetView(limit=3, used=0, cheapest_cost=1)


def state(messages: list[dict[str, object]], step: int = 0) -> StepState:
    return StepState("acme", "ep-1", step, "agent", messages, extract_features(messages, step))


CALM = state([{"role": "user", "content": "add 2 and 3"}])
STUCK = state(
    [
        {"role": "user", "content": "open the file"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "open", "arguments": "{}"}}]},
        {"role": "tool", "content": "Error: file not found"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "open", "arguments": "{}"}}]},
        {"role": "tool", "content": "Error: file not found"},
    ],
    step=6,
)


def test_registry_has_the_builtin_kinds() -> None:
    assert {"never", "always", "random", "threshold"} <= set(policy_kinds())


def test_never_and_always() -> None:
    never = build_policy({"kind": "never"}, CONTEXT).decide(STUCK, ROOMY)
    always = build_policy({"kind": "always"}, CONTEXT).decide(CALM, ROOMY)
    assert (never.action, never.propensity) == (BASE, 1.0)
    assert (always.action, always.p_escalate, always.propensity) == ("strong", 1.0, 1.0)


def test_threshold_escalates_a_stuck_agent_and_not_a_calm_one() -> None:
    policy = build_policy({"kind": "threshold", "threshold": 0.5}, CONTEXT)
    calm, stuck = policy.decide(CALM, ROOMY), policy.decide(STUCK, ROOMY)
    assert calm.action == BASE and calm.p_escalate < 0.5
    assert stuck.action == "strong" and stuck.p_escalate >= 0.5
    assert stuck.policy_id == "threshold@0.5" and stuck.reason == "threshold"


def test_random_escalates_at_its_rate_with_matching_propensities() -> None:
    policy = build_policy({"kind": "random", "p": 0.3, "seed": 1}, CONTEXT)
    decisions = [policy.decide(CALM, ROOMY) for _ in range(4000)]
    rate = sum(d.escalates for d in decisions) / len(decisions)
    assert 0.27 < rate < 0.33
    assert all(d.propensity == 0.3 for d in decisions if d.escalates)
    assert all(d.propensity == pytest.approx(0.7) for d in decisions if not d.escalates)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "oracle"}, "unknown policy kind 'oracle'"),
        ({"kind": "threshold", "tau": 0.3}, "does not accept tau"),
        ({"kind": "threshold", "threshold": "high"}, "threshold must be float"),
        ({"kind": "threshold", "threshold": 1.5}, "must be in [0, 1]"),
        ({"kind": "random", "p": True}, "p must be float"),
        ({"kind": "never", "p": 0.1}, "does not accept p"),
    ],
)
def test_bad_policy_config_is_refused_with_a_clear_message(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_policy(spec, CONTEXT)


# -- budget feasibility and exploration ------------------------------------------------------

ESCALATE = Decision("strong", 0.9, 1.0, "always", "always")
STAY = Decision(BASE, 0.1, 1.0, "never", "never")


@pytest.mark.parametrize(
    "budget",
    [BudgetView(limit=0, used=0, cheapest_cost=1), BudgetView(limit=3, used=2, cheapest_cost=2)],
    ids=["budget-0", "cost-over-remaining"],
)
@pytest.mark.parametrize("exploration", [0.0, 1.0])
def test_without_budget_base_is_the_only_action(budget: BudgetView, exploration: float) -> None:
    rng = random.Random(0)
    decided = finish_decision(ESCALATE, budget, "strong", exploration, rng)
    assert (decided.action, decided.propensity, decided.reason) == (BASE, 1.0, "budget_exhausted")
    assert decided.p_escalate == 0.9  # the helper's score is still logged
    assert finish_decision(STAY, budget, "strong", exploration, rng).action == BASE


def test_exploration_zero_keeps_the_policy_decision() -> None:
    rng = random.Random(0)
    for decision in (ESCALATE, STAY):
        assert finish_decision(decision, ROOMY, "strong", 0.0, rng) == decision


def test_exploration_one_always_flips_with_propensity_one() -> None:
    rng = random.Random(0)
    flipped_down = finish_decision(ESCALATE, ROOMY, "strong", 1.0, rng)
    flipped_up = finish_decision(STAY, ROOMY, "strong", 1.0, rng)
    assert (flipped_down.action, flipped_down.explored, flipped_down.reason) == (
        BASE,
        True,
        "exploration",
    )
    assert flipped_up.action == "strong" and flipped_up.explored
    assert flipped_down.propensity == flipped_up.propensity == 1.0


def test_exploration_propensities_are_the_probability_of_the_action_taken() -> None:
    rng = random.Random(3)
    eps = 0.2
    decisions = [finish_decision(STAY, ROOMY, "strong", eps, rng) for _ in range(5000)]
    explored = [d for d in decisions if d.explored]
    kept = [d for d in decisions if not d.explored]
    assert 0.17 < len(explored) / len(decisions) < 0.23
    assert all(d.propensity == pytest.approx(eps) for d in explored)
    assert all(d.propensity == pytest.approx(1 - eps) for d in kept)


def test_exploration_over_a_stochastic_policy_mixes_both_probabilities() -> None:
    # π(strong) = 0.3; taken strong without a flip: (1-ε)·0.3 + ε·0.7
    decision = Decision("strong", 0.3, 0.3, "random@0.3", "random")
    rng = random.Random(0)
    kept = next(
        d
        for d in (finish_decision(decision, ROOMY, "strong", 0.1, rng) for _ in range(100))
        if not d.explored
    )
    assert kept.propensity == pytest.approx(0.9 * 0.3 + 0.1 * 0.7)
