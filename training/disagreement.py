"""Where the base model's answer would differ from the intervention's.

On an escalated step the proxy also asks the base model, and on a share of the base
model's steps the intervention, and logs whether the two answers agree (server/agreement.py).
Where they agree, intervening changed nothing; where they differ, it may have changed
everything. So P(differ | s) is an estimate of where an intervention can matter, learned on
every checked step: a label per checked state, where the outcome-based effects
(training/advantage.py) have one noisy episode result shared by all of an episode's steps,
and a difference of two such means.

Two learners are cross-fitted, a ridge regression and a small ReLU network
(training/linear.py), which sees conjunctions a linear model cannot (what is held AND where
the agent stands), and the one that ranks the checks better out of fold is kept (`ranking`:
the ROC AUC of its cross-fitted scores against the checks' answers). The helper uses the
score to rank states, and a fit's squared error mostly measures the labels' noise: on 4
collections of the benchmark's text adventure, the lower error chose a learner on the
features alone in 3, which ranked the hidden hard steps at AUC 0.78-0.83, where the learner
ranking the checks best reached 0.81-0.88, the best of the four or within 0.001 of it.

It says nothing of which answer was right: a base model that differs where it is right
makes this a poor helper, and the held-out judging (training/selection.py), which reads
outcomes, is what finds that out.

The checks also say how many interventions are worth making (`worth_making`): about as
many per episode as there are steps where the base model is likely to go wrong. Ranked by
the helper's score, the checked steps of its lower half show how often the base model
answers otherwise at a routine step (d_r), its top tenth how often where it most likely
errs (d_h); the excess of the overall rate over the routine one, spread at the top's rate,
is the share of steps that need the intervention:

    needed per episode = steps per episode · (d − d_r) / (d_h − d_r)

and a quarter more are worth making (`MARGIN`). The checked steps stand for every state the
logging policy met with budget left, each weighed by one over the probability that it was
checked (`check_weights`): exploration's escalations alone are a sample of the states the
logging policy answered on base, so a policy that already escalates where the base model
errs kept those states out of them (7 runs of the simulated data agent's demo behind a
hand-set policy: that pool counted 0.11-1.38 per episode, or none, and the helpers spent
0.13-1.16; on 3 of those runs' logs the weighted checks of both directions counted
0.96-1.80). A top that exceeds the routine rate by less than two standard errors
(`SEPARATION`) gives no count: the difference is noise, and so is the count it divides.

A quarter more, because at the count needed a ranking that is not perfect meets only part
of the steps that need one, and a few more interventions still land on them far more often
than at random. The operator's budget is a ceiling, not a quota; past this count,
interventions land mostly where the base model would have answered as well.

Measured on the benchmark's worlds (8 collections), the count needed came within
0.65-1.08x of the oracle's usage (the oracle knows the hard steps), so the count worth
making within 0.8-1.35x; the share of the hard steps met rose 0.03-0.06 from 1.0x to 1.25x
of the oracle's usage and then flattened. A ranking that is not sharp leaves hard steps in
its lower half, which raises d_r and undercounts: on 7 collections with the hidden hard
steps known (bench/ranking.py), the count from the lower half came to 0.33-1.45x of the
hard steps per episode (mean 0.84), from the lowest 30% to 0.68-1.68x (mean 1.05). Online
the larger count did not pay where it neared the budget (`ROUTINE_SHARE`): the grid world
spent 3.4 of its 4 per episode for 0.35 of the oracle's gain, against 3.1 for 0.42 from the
lower half (3 runs each); a session whose budget is spent early meets its later hard steps
with none left. The earlier count, "states more likely to differ
than a random escalated one", ranged over 0.76-2.6x with how sharp the learner's
probabilities were; the outcome-based estimates of success per usage are too noisy on a
few hundred sessions to find where their curve flattens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from training.dataset import Dataset
from training.linear import ScoreModel, fit_network, fit_ridge

MIN_CHECKS = 30  # steps with a check, and as many of each answer at least
MIN_EACH = 5
# The checked steps the helper ranks highest, whose rate of differing stands for a step that
# needs the intervention.
TOP_SHARE = 0.1
# The checked steps it ranks lowest, whose rate stands for a routine step (module docstring).
ROUTINE_SHARE = 0.5
MARGIN = 1.25  # interventions worth making per one needed
# Standard errors by which the top's rate of differing must exceed the routine one's for a
# count: below it the difference is noise, and so is any count it divides.
SEPARATION = 2.0


@dataclass(frozen=True)
class Disagreement:
    scores: np.ndarray  # out-of-fold score on every step (the model's logit scale)
    probability: np.ndarray  # out-of-fold P(differ | s) on every step
    model: ScoreModel  # fitted on every checked step
    fit_error: float  # out-of-fold mean squared error of P(differ) on the checked steps
    ranking: float  # out-of-fold ROC AUC of the scores against the checks' answers
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
    session folds; the one that ranks the checks better out of fold, refitted on every
    checked step."""
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
        ranking = float(roc_auc_score(target[rows] > 0.5, scores[rows]))
        if best is None or ranking > best.ranking:
            model = fit(matrix, target, rows, max_rows, seed)
            best = Disagreement(scores, p, model, error, ranking, name)
    assert best is not None, "no learner"
    return best


def worth_making(data: Dataset, scores: np.ndarray) -> float | None:
    """Interventions per episode worth making (module docstring) by the checks and the
    helper's score `scores` (higher: escalate first); None where the checks show no step
    clearly likelier to differ than a routine one."""
    pool, weight = check_weights(data)
    if pool.sum() < MIN_CHECKS:
        return None
    differ = 1.0 - data.agreement[pool]
    order = np.argsort(scores[pool], kind="stable")
    differ, weight = differ[order], weight[order]
    rank = (np.cumsum(weight) - 0.5 * weight) / weight.sum()  # weighted quantile of each
    low, high = rank <= ROUTINE_SHARE, rank >= 1.0 - TOP_SHARE
    routine, routine_se = _weighted_rate(differ[low], weight[low])
    top, top_se = _weighted_rate(differ[high], weight[high])
    if top - routine <= SEPARATION * float(np.hypot(routine_se, top_se)):
        return None
    overall, _ = _weighted_rate(differ, weight)
    share = max(overall - routine, 0.0) / (top - routine)
    return MARGIN * share * data.n_steps / max(data.n_sessions, 1) or None


def check_weights(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The checked steps that had budget left to intervene, and each one's weight: one over
    the probability that its state was checked at all (module docstring).

    A state is checked when escalated (the base model asked) or answered by the base model
    and picked for a check of the intervention, so P(checked | s) = p(s)·r_e + (1 − p(s))·r_b,
    with p(s) the logged probability of escalating there and r_e, r_b the shares of
    escalated and base steps that were checked (measured: checks are shed under load, and
    the base steps' share is the tenant's).
    """
    able = data.remaining > 0
    rows = ~np.isnan(data.agreement) & able
    escalated = data.action == 1

    def share_checked(taken: np.ndarray) -> float:
        steps = able & taken
        return float(rows[steps].mean()) if steps.any() else 0.0

    p = np.where(escalated, data.propensity, 1.0 - data.propensity)
    p_checked = p * share_checked(escalated) + (1.0 - p) * share_checked(~escalated)
    pool = rows & (p_checked > 0)
    return pool, 1.0 / p_checked[pool]


def _weighted_rate(values: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """A weighted mean and its standard error (the ratio estimator's)."""
    total = float(weight.sum())
    mean = float((weight * values).sum()) / total
    se = float(np.sqrt((weight**2 * (values - mean) ** 2).sum())) / total
    return mean, se
