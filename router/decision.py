"""What a policy sees of the budget, and what it answers."""

from __future__ import annotations

from dataclasses import dataclass

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
