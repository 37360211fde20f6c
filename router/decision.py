"""One step's decision: what a policy sees of the budget, what it answers, and how that
answer is finished (the budget's feasibility, then exploration).

Exploration flips the policy's action with probability ε. The propensity logged is the
probability that the action actually taken would be taken again in the same state:

    P(a) = (1 - ε) · π(a) + ε · (1 - π(a))

where π(a) is the policy's own probability of choosing a. With no budget left for the
intervention, `base` is the only feasible action and its propensity is 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

BASE = "base"


@dataclass(frozen=True, slots=True)
class BudgetView:
    """The session's intervention budget as the policy sees it, in budget units."""

    limit: int
    used: int
    cheapest_cost: int

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    @property
    def can_intervene(self) -> bool:
        return self.cheapest_cost <= self.remaining


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer for one step.

    `action` is `base` or the kind of an intervention; `p_escalate` is the policy's score
    (its probability or confidence that escalating pays off); `propensity` is the probability
    with which the action actually taken was chosen, as off-policy evaluation needs it.
    """

    action: str
    p_escalate: float
    propensity: float
    policy_id: str
    reason: str
    explored: bool = False

    @property
    def escalates(self) -> bool:
        return self.action != BASE


def fallback(policy_id: str, reason: str) -> Decision:
    """The decision taken when the policy failed: fall open to the base model."""
    return Decision(BASE, 0.0, 1.0, policy_id, reason)


def finish_decision(
    decision: Decision,
    budget: BudgetView,
    intervention: str,
    exploration: float,
    rng: random.Random,
) -> Decision:
    """Apply the budget's feasibility and the tenant's exploration to a policy's decision."""
    if not budget.can_intervene:
        reason = "budget_exhausted" if decision.escalates else decision.reason
        return replace(decision, action=BASE, propensity=1.0, reason=reason)
    if exploration <= 0.0:
        return decision
    flipped = rng.random() < exploration
    action = decision.action
    if flipped:
        action = BASE if decision.escalates else intervention
    pi_taken = decision.propensity if action == decision.action else 1.0 - decision.propensity
    propensity = (1.0 - exploration) * pi_taken + exploration * (1.0 - pi_taken)
    return replace(
        decision,
        action=action,
        propensity=propensity,
        explored=flipped,
        reason="exploration" if flipped else decision.reason,
    )
