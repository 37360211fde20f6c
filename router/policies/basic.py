"""The built-in policies: never, always, random, threshold (on a prior or a PRM)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from router.artifacts import ArtifactError, HelperArtifact, load_artifact
from router.decision import BASE, BudgetView, Decision
from router.policies.base import (
    Policy,
    PolicyConfigError,
    PolicyContext,
    register_policy,
    take_params,
)
from router.score import heuristic_score
from router.state import FEATURE_NAMES, StepState


class Never:
    inline = True
    thresholded = False

    def __init__(self) -> None:
        self.policy_id = "never"

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        return Decision(BASE, 0.0, 1.0, self.policy_id, "never")


class Always:
    inline = True
    thresholded = False

    def __init__(self, intervention: str) -> None:
        self.policy_id = "always"
        self._intervention = intervention

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        return Decision(self._intervention, 1.0, 1.0, self.policy_id, "always")


class Random:
    """Escalates each step with probability p: the baseline and a data-collection policy."""

    inline = True
    thresholded = False

    def __init__(self, intervention: str, p: float, seed: int | None) -> None:
        if not 0.0 <= p <= 1.0:
            raise PolicyConfigError(f"policy 'random': p must be in [0, 1], got {p}")
        self.policy_id = f"random@{p:g}"
        self._intervention = intervention
        self._p = p
        self._rng = random.Random(seed)

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        if self._rng.random() < self._p:
            return Decision(self._intervention, self._p, self._p, self.policy_id, "random")
        return Decision(BASE, self._p, 1.0 - self._p, self.policy_id, "random")


class Threshold:
    """Escalates when the step's score reaches the threshold τ. The score is the risk the
    PRM sees, 1 - P(success), when a PRM artifact is given; else the hand-set prior of
    router/score.py."""

    inline = True
    thresholded = True

    def __init__(
        self, intervention: str, threshold: float, prm: HelperArtifact | None = None
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise PolicyConfigError(
                f"policy 'threshold': threshold must be in [0, 1], got {threshold}"
            )
        self.policy_id = f"threshold@{threshold:g}" + (f"/prm@{prm.digest[:8]}" if prm else "")
        self._intervention = intervention
        self._threshold = threshold
        self._prm = prm

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        if self._prm is None:
            score = heuristic_score(state.features)
        else:
            success = self._prm.scorer.score(state.features, state.messages, budget.remaining)
            score = 1.0 - success
        action = self._intervention if score >= self._threshold else BASE
        return Decision(action, score, 1.0, self.policy_id, "threshold")


@register_policy("never")
def _never(params: Mapping[str, Any], context: PolicyContext) -> Policy:
    take_params("never", params, {})
    return Never()


@register_policy("always")
def _always(params: Mapping[str, Any], context: PolicyContext) -> Policy:
    take_params("always", params, {})
    return Always(context.intervention)


@register_policy("random")
def _random(params: Mapping[str, Any], context: PolicyContext) -> Policy:
    checked = take_params("random", params, {"p": float, "seed": int})
    return Random(context.intervention, checked.get("p", 0.2), checked.get("seed", context.seed))


def _check_threshold(params: Mapping[str, Any], context: PolicyContext) -> None:
    checked = take_params("threshold", params, {"threshold": float, "prm": str})
    Threshold(context.intervention, checked.get("threshold", 0.5))  # its PRM is not read


@register_policy("threshold", check=_check_threshold)
def _threshold(params: Mapping[str, Any], context: PolicyContext) -> Policy:
    checked = take_params("threshold", params, {"threshold": float, "prm": str})
    prm = None
    if "prm" in checked:
        try:
            prm = load_artifact(checked["prm"], FEATURE_NAMES)
        except ArtifactError as exc:
            raise PolicyConfigError(f"policy 'threshold': prm: {exc}") from None
    return Threshold(context.intervention, checked.get("threshold", 0.5), prm)
