"""A cheap prior score of how much a step would gain from an intervention.

Used by the `threshold` policy until a trained PRM replaces it. It is a hand-set logistic
over the trajectory features: a failed tool call, a repeated action and a long episode each
raise the odds that the base model is stuck. The weights are priors, not fitted values.
"""

from __future__ import annotations

import math

from router.state import Features

_WEIGHTS: dict[str, float] = {
    "last_tool_error": 2.0,
    "repeated_actions": 1.2,
    "tool_error_rate": 1.5,
    "step": 0.08,
    # After a draft: the base model's own doubt, and answers that cannot be used as they are.
    "draft_uncertainty": 1.5,
    "draft_invalid_tool_args": 2.0,
    "draft_truncated": 1.0,
}
_BIAS = -2.0


def heuristic_score(features: Features) -> float:
    """P(escalation pays off) under the hand-set prior, in [0, 1]."""
    z = _BIAS + sum(w * features.get(name, 0.0) for name, w in _WEIGHTS.items())
    return 1.0 / (1.0 + math.exp(-z))
