"""Evaluation helpers of the pipeline: the logged policy as it ran, the baselines set to a
candidate's usage, when escalations happen along the episode, and the OPE figures a
helper artifact carries."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import Dataset
from training.ope import Estimate

# The share of logged sessions whose budget ran out, past which the figures carry a caution.
CROWDED_SHARE = 0.3


def crowded_sessions(data: Dataset, eligible: np.ndarray) -> float:
    """The share of logged sessions with a step that began without budget for an
    intervention (not `eligible`): the budget ran out before their last step.

    In such logs an intervention also takes a unit from a later step of the logging
    policy, so the per-step effects the first-order estimates add up (training/selection.py)
    carry that loss: the logging policy's own interventions are credited too little, and
    `never`, and every figure added to it, read high. Measured on the benchmark's worlds
    (exploration 0.3, C = 4): the text adventure ran out in 40-43% of its sessions and its
    chosen helper's success was overstated by 0.20-0.25 in 2 of 3 runs (at seed 1000 the
    effects at routine steps averaged -0.044, crediting the logged interventions with 0.02
    where they added about 0.15); the grid at 24-30% and the reasoning agent at 4% were
    estimated within their intervals."""
    ran_out = np.zeros(data.n_sessions, dtype=bool)
    np.logical_or.at(ran_out, data.session, ~eligible)
    return float(ran_out.mean()) if data.n_sessions else 0.0


def crowding_caution(share: float) -> str | None:
    """What to tell the user of logs whose budget often ran out, or None."""
    if share <= CROWDED_SHARE:
        return None
    return (
        f"In {share:.0%} of the logged sessions the budget ran out: an intervention there also "
        "took one from a later step, which these estimates count against the logged "
        "interventions, so never and every success figure read high (on the benchmark's text "
        "adventure, at 40% of sessions, the chosen helper's by 0.20-0.25). Collect with less "
        "exploration or a larger budget for figures to rely on."
    )


def as_logged(test: Dataset, model: Estimate) -> Estimate:
    """The logging policy itself (exploration included): its held-out episodes averaged."""
    n = max(test.n_sessions, 1)
    spent = np.bincount(test.session, test.action * test.cost, minlength=test.n_sessions)
    return Estimate(
        policy="current (as logged)",
        success_ips=float(test.success.mean()),
        success_dr=float(test.success.mean()),
        success_se=float(test.success.std(ddof=1) / np.sqrt(n)) if n > 1 else math.nan,
        usage_ips=float(spent.mean()),
        usage_dr=float(spent.mean()),
        usage_se=float(spent.std(ddof=1) / np.sqrt(n)) if n > 1 else math.nan,
        ess=float(n),
        model_success=model.model_success,
        model_usage=model.model_usage,
    )


def baselines_at_usage(
    usage: float,
    value: np.ndarray,
    data: Dataset,
    eligible: np.ndarray,
    evaluate_policy: Callable[[str, np.ndarray], Estimate],
    model_usage: Callable[[np.ndarray], float],
) -> list[Estimate]:
    """never, always, and random and PRM-threshold tuned (on the model) to `usage`."""
    never = evaluate_policy("never", np.zeros(data.n_steps))
    always = evaluate_policy("always", eligible.astype(np.float64))

    def bisect(make: Callable[[float], np.ndarray], increasing: bool) -> np.ndarray:
        low, high = 0.0, 1.0
        for _ in range(25):
            middle = (low + high) / 2
            used = model_usage(make(middle))
            if (used < usage) == increasing:
                low = middle
            else:
                high = middle
        return make((low + high) / 2)

    random_p = bisect(lambda p: np.full(data.n_steps, p), increasing=True)
    risk = 1.0 - value
    threshold_p = bisect(lambda t: (risk >= t).astype(np.float64), increasing=False)
    return [
        never,
        always,
        evaluate_policy("random (equal usage)", random_p),
        evaluate_policy("PRM threshold (equal usage)", threshold_p),
    ]


def escalation_by_step(
    data: Dataset,
    held_out: np.ndarray,
    helper_flags: dict[str, np.ndarray],
) -> dict[str, list[float]]:
    """Escalation rate by step index on held-out states: logged, and each candidate's
    (`helper_flags`: where it escalates, on every logged step)."""
    steps = data.step[held_out]
    horizon = int(min(steps.max() + 1, 30)) if len(steps) else 0
    out: dict[str, list[float]] = {}

    def by_step(flags: np.ndarray) -> list[float]:
        rates = []
        for s in range(horizon):
            at = steps == s
            rates.append(float(flags[at].mean()) if at.any() else math.nan)
        return rates

    out["logged"] = by_step(data.action[held_out].astype(float))
    for name, flags in helper_flags.items():
        out[name] = by_step(flags[held_out].astype(float))
    return out


def add_evaluation(directory: Path, candidate: Estimate) -> None:
    path = directory / "helper.json"
    spec: dict[str, Any] = json.loads(path.read_text())
    spec.setdefault("evaluation", {})["ope"] = asdict(candidate)
    path.write_text(json.dumps(spec, indent=2) + "\n")
