"""Stages 3-6 of `escalator train` (training/pipeline.py), the paper's method: PRM-score
bins and a tabular MDP, the DP per target (training/dp.py), a helper imitating it, exported,
and judged off-policy on the held-out sessions.

3. Bins at quantiles of the training steps' PRM scores; the MDP's transitions counted on the
   training sessions, with `prior_strength` pseudo-transitions toward the per-action
   values where they are thin (training/mdp.py).
4. The DP with the λ search per target C (`dp.search_penalty`).
5. The helper trained to take the DP's action for each state and remaining budget.
6. Per-decision IPS and doubly robust estimates with the logged propensities
   (training/ope.py): the helper, the DP's table, and never, always, random and PRM
   threshold at the helper's usage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import dp
from training.config import TrainConfig
from training.evaluation import add_evaluation, baselines_at_usage
from training.helper import Helper, dp_labels, export_learned, export_table, train_helper
from training.mdp import TabularMdp, assign_bins, bin_means, estimate_mdp, score_edges
from training.ope import Estimate, Trajectories, estimate, tabulate
from training.stage_candidates import Selected
from training.stage_inputs import PrmFit, Steps


@dataclass
class BudgetResult:
    target: float
    solution: dp.DpSolution
    helper: Helper
    agreement: float  # held-out share of eligible steps where the helper does what the DP does
    helper_rate: float  # held-out escalation rate of the helper on eligible steps
    learned_dir: Path
    table_dir: Path | None
    escalates: np.ndarray  # where the helper escalates, every logged step
    estimates: list[Estimate] = field(default_factory=list)
    selected: Selected | None = None
    # Interventions per episode worth making: as many as the steps where the agreement
    # checks find the base model likely to answer otherwise (training/disagreement.py); without
    # checks, where the default candidate's estimated gain most exceeds random escalation's
    # (`beats_random`). The helper is chosen at the lower of this and the target: a budget
    # is a ceiling, not a quota.
    worth_making: float | None = None
    beats_random: float | None = None

    @property
    def usage_goal(self) -> float:
        bound = self.worth_making if self.worth_making is not None else self.beats_random
        return self.target if bound is None else min(self.target, bound)


def tabular_mdp(config: TrainConfig, steps: Steps, prm: PrmFit) -> tuple[TabularMdp, np.ndarray]:
    """3. The PRM-score bins (at quantiles of the training steps' scores) and the tabular
    MDP counted on the training sessions, its leaves the per-action values; with every
    logged step's bin."""
    value, q, train_rows = prm.value, prm.action_values, steps.train_rows
    edges = score_edges(value[train_rows], config.bins)
    bins = assign_bins(value, edges)
    k = len(edges) - 1
    v_mean = bin_means(value, bins, k, np.full(k, float(steps.outcome.mean())))
    leaf = np.stack([bin_means(q[:, a], bins, k, v_mean) for a in (0, 1)])
    train = steps.data.subset(~steps.held_out_session)
    mdp = estimate_mdp(
        bins[train_rows],
        train.action,
        train.start,
        train.success,
        leaf,
        edges,
        config.prior_strength,
        steps.cost,
    )
    return mdp, bins


def imitate_dp(
    config: TrainConfig,
    steps: Steps,
    prm: PrmFit,
    mdp: TabularMdp,
    bins: np.ndarray,
    solution: dp.DpSolution,
    target: float,
    out: Path,
) -> BudgetResult:
    """5. The helper trained on the training sessions to take the DP's action for each
    state's remaining budget, exported as `C<target>/learned` (and, with the linear PRM,
    the DP's own table as `C<target>/table`); its agreement with the DP held out."""
    data, eligible, held_out = steps.data, steps.eligible, steps.held_out
    labels = dp_labels(solution, bins, data.remaining)
    helper, scores = train_helper(
        steps.design,
        data.remaining,
        labels,
        eligible & steps.train_rows,
        steps.cap,
        config.target_rate,
        config.l2,
        config.max_fit_rows,
        config.seed,
        np.arange(steps.design.shape[1] - 1) < len(steps.inputs.feature_columns),
    )
    flags = helper.escalates(scores, data.remaining)
    chosen = flags & eligible
    check = eligible & held_out
    agreement = float((chosen[check] == labels[check]).mean()) if check.any() else math.nan
    meta = steps.meta(config, target_usage=target) | {
        "evaluation": {
            "dp_success": solution.success,
            "dp_usage": solution.usage,
            "penalty": solution.penalty,
            "agreement_with_dp": agreement,
        }
    }
    name, columns, embedding = target_name(target), steps.inputs.feature_columns, steps.embedding
    learned_dir = out / f"C{name}" / "learned"
    export_learned(learned_dir, helper, columns, embedding.artifact_entry(), meta)
    table_dir = None
    if prm.linear is not None:
        table_dir = out / f"C{name}" / "table"
        export_table(
            table_dir, prm.linear, solution, mdp.edges, columns, embedding.artifact_entry(), meta
        )
    return BudgetResult(
        target,
        solution,
        helper,
        agreement,
        float(chosen[check].mean()) if check.any() else math.nan,
        learned_dir,
        table_dir,
        flags,
    )


def evaluate_helper(
    steps: Steps, prm: PrmFit, bins: np.ndarray, budget: BudgetResult, held_out: HeldOut
) -> list[Estimate]:
    """6. The helper and the DP's own table on the held-out sessions, then never, always,
    and random and PRM threshold at the helper's usage; the helper's figures are added to
    its artifact."""
    data, eligible = steps.data, steps.eligible
    name = target_name(budget.target)
    table_p = budget.solution.escalate[bins, np.minimum(data.remaining, steps.cap)]
    helper = held_out.estimate(f"helper C={name}", (budget.escalates & eligible).astype(np.float64))
    estimates = [
        helper,
        held_out.estimate(f"DP table C={name}", table_p.astype(np.float64)),
        *baselines_at_usage(
            helper.model_usage, prm.value, data, eligible, held_out.estimate, held_out.model_usage
        ),
    ]
    add_evaluation(budget.learned_dir, helper)
    return estimates


@dataclass(frozen=True)
class HeldOut:
    """Stage 6's judge: a policy, given as P(escalate) at every logged step, estimated on
    the held-out sessions (per-decision IPS and doubly robust, the MDP as the model), and
    its usage predicted by the MDP on the training sessions."""

    mdp: TabularMdp
    cap: int
    clip: float
    held_out: np.ndarray  # per step
    trajectories: Trajectories  # the held-out sessions'
    train_bins: np.ndarray
    train_remaining: np.ndarray

    @classmethod
    def of(cls, steps: Steps, mdp: TabularMdp, bins: np.ndarray, clip: float) -> HeldOut:
        test, held_out = steps.data.subset(steps.held_out_session), steps.held_out
        trajectories = Trajectories(
            start=test.start,
            position=test.step,
            action=test.action.astype(np.int64),
            propensity=test.propensity,
            cost=test.cost,
            bins=bins[held_out],
            remaining=test.remaining,
            success=test.success,
        )
        train = steps.train_rows
        return cls(
            mdp, steps.cap, clip, held_out, trajectories, bins[train], steps.data.remaining[train]
        )

    def estimate(self, name: str, p_step: np.ndarray) -> Estimate:
        p_test = p_step[self.held_out]
        t = self.trajectories
        table = tabulate(p_test, t.bins, t.remaining, self.mdp.n_bins, self.cap)
        return estimate(name, p_test, table, t, self.mdp, self.cap, self.clip)

    def model_usage(self, p_step: np.ndarray) -> float:
        p_train = p_step[~self.held_out]
        table = tabulate(p_train, self.train_bins, self.train_remaining, self.mdp.n_bins, self.cap)
        return dp.predict(self.mdp, table, self.cap)[1]


def target_name(target: float) -> str:
    return f"{target:g}"
