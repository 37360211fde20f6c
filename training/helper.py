"""The helper: imitate the DP policy from what the proxy sees at decision time, and export.

Every logged state where an intervention was affordable is labelled with the DP's action
for its bin and remaining budget. A logistic model on (features, embedding, remaining
budget) learns P(the DP escalates here); then one threshold per remaining budget is set so
the helper escalates as often, among the logged states with that budget, as the DP does
(quantile matching). Asked for a target escalation rate R, all thresholds move together in
logit space until the helper escalates on a share R of the logged states.

The artifacts are the format of router/artifacts.py: `learned` (this model) and `table`
(the DP table over the linear PRM's score bins).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.state import FEATURE_NAMES
from training.dp import DpSolution
from training.linear import HiddenLayer, ScoreModel, fit_logistic

NEVER = 2.0  # a threshold no score reaches: P ≤ 1


@dataclass(frozen=True)
class Helper:
    model: ScoreModel  # over [features, embedding, remaining]
    thresholds: dict[int, float]  # remaining budget -> threshold; 0 and above-cap included
    cap: int

    def threshold_of(self, remaining: np.ndarray) -> np.ndarray:
        capped = np.minimum(remaining, self.cap)
        table = np.array([self.thresholds.get(b, NEVER) for b in range(self.cap + 1)])
        thresholds: np.ndarray = table[capped]
        return thresholds

    def escalates(self, scores: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        chosen: np.ndarray = scores >= self.threshold_of(remaining)
        return chosen


def dp_labels(solution: DpSolution, bins: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    labels: np.ndarray = solution.escalate[bins, np.minimum(remaining, solution.budget)]
    return labels


def train_helper(
    inputs: np.ndarray,
    remaining: np.ndarray,
    labels: np.ndarray,
    eligible: np.ndarray,
    cap: int,
    target_rate: float | None = None,
    l2: float = 1.0,
    max_rows: int = 200_000,
    seed: int = 0,
    scaled: np.ndarray | None = None,
) -> tuple[Helper, np.ndarray]:
    """Fit on the eligible rows (an intervention was affordable) and set the thresholds;
    return the helper and its score on every row. `inputs` holds the state matrix with the
    remaining budget as its last column; `scaled` marks the state columns to standardise
    (the budget always is)."""
    scaled_inputs = None if scaled is None else np.append(scaled, True)
    model = fit_logistic(
        inputs, labels, eligible, l2, max_rows, seed, balanced=True, scaled=scaled_inputs
    )
    all_scores = model.predict(inputs)
    scores = all_scores[eligible]
    budgets = np.minimum(remaining[eligible], cap)
    wanted = labels[eligible].astype(np.float64)
    thresholds: dict[int, float] = {0: NEVER}
    for b in range(1, cap + 1):
        at_b = budgets == b
        thresholds[b] = (
            _matching_threshold(scores[at_b], wanted[at_b].mean()) if at_b.any() else NEVER
        )
    helper = Helper(model, thresholds, cap)
    if target_rate is not None:
        helper = _shift_to_rate(helper, scores, budgets, target_rate)
    return helper, all_scores


def _matching_threshold(scores: np.ndarray, rate: float) -> float:
    """The threshold at which a share `rate` of these scores escalate."""
    if rate <= 0.0:
        return NEVER
    if rate >= 1.0:
        return 0.0
    return float(np.quantile(scores, 1.0 - rate, method="higher"))


def _shift_to_rate(helper: Helper, scores: np.ndarray, budgets: np.ndarray, rate: float) -> Helper:
    def shifted(delta: float) -> dict[int, float]:
        out = {}
        for b, t in helper.thresholds.items():
            if t >= NEVER or t <= 0.0:
                out[b] = t
            else:
                z = np.log(t / (1 - t)) + delta
                out[b] = float(1 / (1 + np.exp(-z)))
        return out

    def rate_at(delta: float) -> float:
        table = shifted(delta)
        thresholds = np.array([table.get(int(b), NEVER) for b in budgets])
        return float((scores >= thresholds).mean()) if len(scores) else 0.0

    low, high = -30.0, 30.0  # a higher shift escalates less
    for _ in range(60):
        middle = (low + high) / 2
        if rate_at(middle) > rate:
            low = middle
        else:
            high = middle
    return Helper(helper.model, shifted(high), helper.cap)


def export_learned(
    directory: Path,
    helper: Helper,
    feature_columns: list[int],
    embedding: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
) -> None:
    n_features = len(feature_columns)
    weights = helper.model.weights
    thresholds: dict[str, float] = {str(b): t for b, t in sorted(helper.thresholds.items())}
    thresholds["default"] = helper.thresholds[helper.cap]
    _write(
        directory,
        {
            "format": 1,
            "kind": "learned",
            "features": [FEATURE_NAMES[i] for i in feature_columns],
            "embedding": embedding,
            "weights": "weights.json",
            "thresholds": thresholds,
            **meta,
        },
        {
            "bias": helper.model.bias,
            "features": weights[:n_features].tolist(),
            "embedding": weights[n_features:-1].tolist(),
            "budget": float(weights[-1]),
            **_hidden_units(helper.model.hidden, n_features),
        },
    )


def _hidden_units(hidden: HiddenLayer | None, n_features: int) -> dict[str, Any]:
    """A network's ReLU units, their input weights split as the linear part's are."""
    if hidden is None:
        return {}
    w = hidden.weights
    return {
        "hidden": {
            "features": w[:, :n_features].tolist(),
            "embedding": w[:, n_features:-1].tolist(),
            "budget": w[:, -1].tolist(),
            "bias": hidden.bias.tolist(),
            "output": hidden.output.tolist(),
        }
    }


def export_table(
    directory: Path,
    prm: ScoreModel,
    solution: DpSolution,
    edges: np.ndarray,
    feature_columns: list[int],
    embedding: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
) -> None:
    n_features = len(feature_columns)
    _write(
        directory,
        {
            "format": 1,
            "kind": "table",
            "features": [FEATURE_NAMES[i] for i in feature_columns],
            "embedding": embedding,
            "weights": "weights.json",
            "bins": edges.tolist(),
            "actions": solution.escalate.astype(int).tolist(),
            **meta,
        },
        {
            "bias": prm.bias,
            "features": prm.weights[:n_features].tolist(),
            "embedding": prm.weights[n_features:].tolist(),
            "budget": 0.0,
        },
    )


def _write(directory: Path, spec: dict[str, Any], weights: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "weights.json").write_text(json.dumps(weights))
    (directory / "helper.json").write_text(json.dumps(spec, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")
