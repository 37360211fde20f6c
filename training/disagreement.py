"""Where the base model's answer would differ from the intervention's.

On an escalated step the proxy also asks the base model and logs whether the two answers
agree (server/agreement.py). Where they agree, intervening changed nothing; where they
differ, it may have changed everything. So P(differ | s) is an estimate of where an
intervention can matter, learned on every checked step: a label per escalated state, where
the outcome-based effects (training/advantage.py) have one noisy episode result shared by all
of an episode's steps, and a difference of two such means.

Two learners are cross-fitted and the one with the lower out-of-fold error kept: a ridge
regression, and a small ReLU network (training/linear.py), which sees conjunctions a linear
model cannot (what is held AND where the agent stands). On the benchmark's text adventure the
network ranked the hidden hard steps at AUC 0.81 where the ridge reached 0.76, from the same
few hundred checks.

It says nothing of which answer was right: a base model that differs where it is right
makes this a poor helper, and the held-out judging (training/selection.py), which reads
outcomes, is what finds that out.

The checks also say how many interventions are worth making (`worth_making`): those at
states where the base model is more likely to answer otherwise than at a random escalated
step. The operator's budget is a ceiling, not a quota; where intervening changes nothing,
spending it buys nothing. (On the benchmark's worlds this count came within 0.9–1.7× of the
oracle's usage, which knows the hard steps; the outcome-based estimates of success per usage
are too noisy on a few hundred sessions to find where their curve flattens.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.dataset import Dataset
from training.linear import ScoreModel, fit_network, fit_ridge
from training.selection import Evidence, replay

MIN_CHECKS = 30  # escalated steps with a check, and as many of each answer at least
MIN_EACH = 5


@dataclass(frozen=True)
class Disagreement:
    scores: np.ndarray  # out-of-fold score on every step (the model's logit scale)
    probability: np.ndarray  # out-of-fold P(differ | s) on every step
    model: ScoreModel  # fitted on every checked step
    fit_error: float  # out-of-fold mean squared error of P(differ) on the checked steps
    learner: str  # "ridge" | "network"


Fit = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], ScoreModel]
# Each learner's fit, and how its score reads as a probability.
LEARNERS: dict[str, tuple[Fit, Callable[[np.ndarray], np.ndarray]]] = {
    "ridge": (fit_ridge, lambda value: np.clip(value, 0.0, 1.0)),
    "network": (fit_network, lambda logit: 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))),
}


def checked(data: Dataset) -> np.ndarray:
    """The steps with an agreement check, where both answers occur often enough to learn
    from; else none."""
    rows: np.ndarray = ~np.isnan(data.agreement)
    differ = int((data.agreement[rows] < 0.5).sum())
    if rows.sum() < MIN_CHECKS or min(differ, int(rows.sum()) - differ) < MIN_EACH:
        return np.zeros(data.n_steps, dtype=bool)
    return rows


def fit_disagreement(
    data: Dataset,
    matrix: np.ndarray,
    rows: np.ndarray,
    fold_of_session: np.ndarray,
    max_rows: int,
    seed: int,
    learners: tuple[str, ...] = tuple(LEARNERS),
) -> Disagreement:
    """P(1 − agreement | s) by each learner (every column standardised), cross-fitted over
    session folds; the one with the lower out-of-fold error, refitted on every checked
    step."""
    target = np.nan_to_num(1.0 - data.agreement)
    fold = fold_of_session[data.session]
    best: Disagreement | None = None
    for name in learners:
        fit, probability = LEARNERS[name]
        scores = np.zeros(data.n_steps)
        for k in range(int(fold_of_session.max()) + 1):
            model = fit(matrix, target, rows & (fold != k), max_rows, seed)
            scores[fold == k] = model.logit(matrix[fold == k])
        p = probability(scores)
        error = float(((p[rows] - target[rows]) ** 2).mean())
        if best is None or error < best.fit_error:
            model = fit(matrix, target, rows, max_rows, seed)
            best = Disagreement(scores, p, model, error, name)
    assert best is not None, "no learner"
    return best


def worth_making(data: Dataset, evidence: Evidence, probability: np.ndarray) -> float:
    """Interventions per logged session (each session's own budget replayed) at the states
    whose P(differ) is above the mean of the checked steps escalated at random (every
    checked step where there are too few of those)."""
    rows = ~np.isnan(data.agreement)
    explored = rows & (data.action != data.policy_action)
    pool = explored if explored.sum() >= MIN_CHECKS else rows
    average = float((1.0 - data.agreement[pool]).mean())
    flags = replay(evidence, probability, average)
    return float(flags.sum() * evidence.cost / max(evidence.n_sessions, 1))
