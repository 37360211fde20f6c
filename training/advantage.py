"""The value of intervening at each logged state, from the logged actions and propensities.

For a logged step t with state s_t, action a_t (1 = an intervention), the logging policy's
escalation probability e_t = μ(1 | s_t) (from the logged propensity) and a return G_t, the
effect of intervening at s is

    τ(s) = E[G_t | s_t = s, a_t = 1] − E[G_t | s_t = s, a_t = 0]

the advantage of one step of policy improvement over the logging policy. G_t is a
Monte-Carlo return (the episode's outcome z, plus the step rewards from t on where the
environment reported any), so a wrong action whose effect shows only at the end still
counts: the MDP over PRM-score bins cannot see such a *silent* mistake, since the next state
looks as good as after a right action.

Two learners, both cross-fitted over session folds (a state's estimate never comes from a
model that saw its session):

- T-learner: τ̂(s) = m̂_1(s) − m̂_0(s), m̂_a a ridge regression of G on the state over the
  steps where a was logged.
- DR-learner (Kennedy, "Towards optimal doubly robust estimation of heterogeneous causal
  effects", 2023): the pseudo-outcome

      φ_t = m̂_1(s_t) − m̂_0(s_t) + (a_t − e_t) / (e_t (1 − e_t)) · (G_t − m̂_{a_t}(s_t))

  is unbiased for τ(s_t) whenever the propensities are right, whatever the m̂; a ridge
  regression of φ on the state gives τ̂. The same φ (with G = z) is what
  training/selection.py evaluates every candidate with.

Only steps with 0 < e_t < 1 carry information: a step with no budget left had no choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.state import FEATURE_NAMES
from training.dataset import Dataset
from training.linear import ScoreModel, fit_ridge

_FAILED = FEATURE_NAMES.index("obs_failed")


@dataclass(frozen=True)
class AdvantageConfig:
    folds: int = 5
    min_propensity: float = 0.02  # e_t is clipped to [m, 1 − m] in the pseudo-outcome
    max_rows: int = 200_000
    seed: int = 0


@dataclass(frozen=True)
class Effects:
    """Cross-fitted estimates for one return: per step, and the models fitted on all data."""

    name: str  # which return: "outcome", "return", "step reward"
    pseudo: np.ndarray  # φ_t (0 where not informative)
    t_learner: np.ndarray  # out-of-fold m̂_1 − m̂_0
    dr_learner: np.ndarray  # out-of-fold τ̂ fitted on φ
    t_model: tuple[ScoreModel, ScoreModel]  # m̂_0, m̂_1 on every informative step
    dr_model: ScoreModel  # τ̂ on every informative step
    fit_error: float  # out-of-fold mean squared error of m̂_a(s_t) against G_t


def escalation_propensity(data: Dataset) -> np.ndarray:
    """e_t = μ(intervene | s_t): the logged propensity of the action taken, turned around
    where the logged action was the base model."""
    e: np.ndarray = np.where(data.action == 1, data.propensity, 1.0 - data.propensity)
    return e


def informative(data: Dataset, cost: int) -> np.ndarray:
    """Steps whose logged action was a coin the logging policy could have flipped."""
    e = escalation_propensity(data)
    mask: np.ndarray = (data.remaining >= cost) & (e > 0.0) & (e < 1.0)
    return mask


def session_folds(n_sessions: int, folds: int, seed: int) -> np.ndarray:
    """A fold per session, balanced and seeded."""
    order = np.random.default_rng(seed).permutation(n_sessions)
    fold = np.empty(n_sessions, dtype=np.int64)
    fold[order] = np.arange(n_sessions) % max(folds, 2)
    return fold


def returns(data: Dataset, value: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The returns a learner may target: the outcome always; given the PRM's P(success) of
    every state, the next state's value (z after the last step: a one-step temporal
    difference target, far less noisy than the outcome, blind to silent mistakes); the next
    observation (`next_observation`) where the logged states carry failures; with
    step rewards, the next state's value plus the step's reward, the outcome plus the
    rewards to go (scaled to the outcome's spread), and the step's own reward (where the
    environment rewards every step, the least noisy signal of what the action did; where it
    rewards only subgoals, a weak one)."""
    z = data.success[data.session]
    out = {"outcome": z}
    if data.features[:, _FAILED].any():  # logs whose states carry the failure detector
        out["next observation"] = next_observation(data)
    if value is not None and len(value) == data.n_steps:
        following = np.append(value[1:], 0.0)
        last = data.is_last
        out["next state"] = np.where(last, z, following)
        if data.has_step_rewards:
            spread = float(data.reward.std())
            scale = float(value.std()) / spread if spread > 0 else 0.0
            out["next state"] = out["next state"] + scale * data.reward
    if not data.has_step_rewards:
        return out
    # Rewards to go: a reversed cumulative sum within each session.
    total = np.cumsum(data.reward[::-1])[::-1]
    ends = data.start[1:]
    nxt = np.append(total, 0.0)[ends]  # what follows each session's last step
    after_session = np.repeat(nxt, np.diff(data.start))
    to_go = total - after_session
    spread = float(to_go.std())
    scale = float(z.std()) / spread if spread > 0 else 0.0
    out["return"] = z + scale * to_go
    out["step reward"] = data.reward.astype(np.float64)
    return out


def next_observation(data: Dataset) -> np.ndarray:
    """1 where the observation that answered the step's action is not a failure (an error,
    a refusal, "nothing happens": the proxy's own detector, `obs_failed` of the next step),
    and on a session's last step its outcome. The least noisy signal of what an action did
    that every log carries: where a weak model's mistakes show at once, intervening changes
    it by tens of points while the outcome moves by a few (the steps after still fail)."""
    z = data.success[data.session]
    failed_next = np.append(data.features[1:, _FAILED], 0.0).astype(np.float64)
    # Where the next logged step is not the next step (a record the log dropped), what
    # answered the action is unknown: the outcome stands in, as on the last step.
    consecutive = np.append(data.step[1:] == data.step[:-1] + 1, False) & ~data.is_last
    return np.where(consecutive, 1.0 - failed_next, z)


def estimate_effects(
    name: str,
    target: np.ndarray,
    matrix: np.ndarray,
    data: Dataset,
    rows: np.ndarray,
    fold_of_session: np.ndarray,
    config: AdvantageConfig,
) -> Effects:
    """Cross-fitted T- and DR-learner estimates of τ for one return, on the `rows` that
    carry information."""
    m = config.min_propensity
    e = np.clip(escalation_propensity(data), m, 1.0 - m)
    a = data.action.astype(np.float64)
    fold = fold_of_session[data.session]
    pseudo = np.zeros(data.n_steps)
    t_oof = np.zeros(data.n_steps)
    dr_oof = np.zeros(data.n_steps)
    squared_error = np.zeros(data.n_steps)
    folds = range(int(fold_of_session.max()) + 1) if len(fold_of_session) else range(0)

    def fit(target_rows: np.ndarray, values: np.ndarray) -> ScoreModel:
        return fit_ridge(matrix, values, target_rows, config.max_rows, config.seed)

    for k in folds:
        fit_rows = rows & (fold != k)
        mine = rows & (fold == k)
        m0 = fit(fit_rows & (a == 0), target)
        m1 = fit(fit_rows & (a == 1), target)
        mu0, mu1 = m0.logit(matrix[mine]), m1.logit(matrix[mine])
        mu_a = np.where(a[mine] == 1, mu1, mu0)
        t_oof[mine] = mu1 - mu0
        squared_error[mine] = (target[mine] - mu_a) ** 2
        pseudo[mine] = (
            mu1 - mu0 + (a[mine] - e[mine]) / (e[mine] * (1 - e[mine])) * (target[mine] - mu_a)
        )
    for k in folds:
        tau = fit(rows & (fold != k), pseudo)
        mine = rows & (fold == k)
        dr_oof[mine] = tau.logit(matrix[mine])
    t_model = (fit(rows & (a == 0), target), fit(rows & (a == 1), target))
    error = float(squared_error[rows].mean()) if rows.any() else float("inf")
    return Effects(name, pseudo, t_oof, dr_oof, t_model, fit(rows, pseudo), error)
