"""`escalator train`: the whole offline pipeline, as the numbered steps of DESIGN.md, one
function each, which `train` calls in order and times:

1. `read_logs`, `embed_states`, `Steps.of`: the dataset from the logs, each logged state's
   inputs (features, then the text embedding), and the sessions split once (seeded,
   `split_sessions`) into training and held-out (training/stage_inputs.py)
2. `fit_prm`: the PRM (+ calibration on held-out sessions) and the per-action values
3. `tabular_mdp`: the PRM-score bins and the tabular MDP (training/stage_dp.py)
4. `dp.search_penalty`: the DP with the λ search per target C
5. `imitate_dp`: the helper imitating the DP, exported
6. `evaluate_helper`: off-policy evaluation against the current policy and the baselines
   at equal usage, on the held-out sessions (`HeldOut`)
7. `choose_helpers`: the value of intervening per state (training/advantage.py), candidates
   judged on every session by cross-fitting, the chosen helper exported as
   `C<target>/selected` (training/stage_candidates.py); then the report
   (training/report.py).

The PRM, the DP and its helper see the training sessions only; their figures are measured
on held-out sessions. The candidates of stage 7 are cross-fitted over session folds instead,
so each session's figures come from models that did not see it. The configuration, every
option documented, is training/config.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import dp
from training.candidates import select
from training.config import TrainConfig
from training.dataset import Dataset, LoadSummary
from training.evaluation import as_logged, crowded_sessions, escalation_by_step
from training.mdp import TabularMdp
from training.ope import Estimate
from training.prm import Calibration
from training.selection import Evidence, sweep, usage_beating_random
from training.stage_candidates import (
    Selected,
    build_candidates,
    dp_helper_candidate,
    export_selected,
)
from training.stage_dp import (
    BudgetResult,
    HeldOut,
    evaluate_helper,
    imitate_dp,
    tabular_mdp,
    target_name,
)
from training.stage_inputs import (
    PrmFit,
    Stage,
    Steps,
    embed_states,
    fit_prm,
    no_progress,
    read_logs,
)

__all__ = ["BudgetResult", "TrainConfig", "TrainResult", "train"]


@dataclass
class TrainResult:
    config: TrainConfig
    summary: LoadSummary
    cap: int
    calibration: Calibration
    action_calibration: dict[str, Calibration]
    mdp: TabularMdp
    budgets: list[BudgetResult]
    current: Estimate
    logged: dict[str, float]  # success and usage per episode as logged (held-out)
    timing: dict[str, float]  # seconds per stage
    escalation_by_step: dict[str, list[float]]
    state_value: np.ndarray  # the PRM's P(success) of every logged step
    eligible: np.ndarray  # logged steps that began with budget for an intervention
    report: Path | None = None
    dataset: Dataset | None = None
    evidence: Evidence | None = None  # what the candidates were judged on

    @property
    def crowded(self) -> float:
        """The share of logged sessions whose budget ran out (training/evaluation.py)."""
        return 0.0 if self.dataset is None else crowded_sessions(self.dataset, self.eligible)

    @property
    def selected(self) -> Selected | None:
        """The chosen helper of the first target (what `--install` installs)."""
        return self.budgets[0].selected if self.budgets else None


def train(config: TrainConfig, stage: Stage = no_progress) -> TrainResult:
    """Stages 1-7 and the report; `stage(name, total)` is told as each begins (for progress
    bars) and returns what to call as its work advances."""
    clock = Stopwatch()
    with clock("dataset"):
        stage("reading logs", None)(0)
        data, summary = read_logs(config)  # 1.
    with clock("embedding"):
        design, embedding = embed_states(config, data, stage)
    steps = Steps.of(config, data, design, embedding)
    with clock("prm"):
        stage("fitting the PRM", None)(0)
        prm = fit_prm(config, steps)  # 2.
    with clock("mdp"):
        mdp, bins = tabular_mdp(config, steps, prm)  # 3.

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out = HeldOut.of(steps, mdp, bins, config.clip)
    targets = config.budgets or tuple(float(c) for c in range(1, max(steps.cap, 1) + 1))
    budgets: list[BudgetResult] = []
    advance = stage("DP, helper and evaluation per budget", len(targets))
    with clock("dp_helper_ope"):
        for target in targets:
            solution = dp.search_penalty(mdp, steps.cap, target)  # 4.
            budget = imitate_dp(config, steps, prm, mdp, bins, solution, target, out)  # 5.
            budget.estimates = evaluate_helper(steps, prm, bins, budget, held_out)  # 6.
            budgets.append(budget)
            advance(1)
    with clock("candidates"):
        stage("value of intervening, candidates", None)(0)
        evidence = choose_helpers(config, steps, prm, budgets, out)  # 7.

    test = data.subset(steps.held_out_session)
    trained = TrainResult(
        config=config,
        summary=summary,
        cap=steps.cap,
        calibration=prm.calibration,
        action_calibration=prm.action_calibration,
        mdp=mdp,
        budgets=budgets,
        current=as_logged(test, held_out.estimate("", data.action.astype(np.float64))),
        logged=logged_figures(test),
        timing=clock.seconds | {"total": clock.total()},
        escalation_by_step=escalation_by_step(
            data,
            steps.held_out,
            {f"helper C={target_name(b.target)}": b.escalates for b in budgets},
        ),
        state_value=prm.value,
        eligible=steps.eligible,
        dataset=data,
        evidence=evidence,
    )
    stage("writing the report", None)(0)
    from training.report import write_report

    trained.report = write_report(trained, out)
    return trained


def choose_helpers(
    config: TrainConfig, steps: Steps, prm: PrmFit, budgets: list[BudgetResult], out: Path
) -> Evidence:
    """7. The candidates cross-fitted on every session, and per target the one chosen among
    them and the DP helper (`config.candidates`: only those so named), at the lower of the
    target and the interventions worth making, exported as `C<target>/selected`. Returns
    the evidence they were judged on."""
    data, inputs = steps.data, steps.inputs
    matrix = steps.design[:, :-1]  # every column a helper reads but the remaining budget
    evidence, candidates, worth = build_candidates(
        data,
        matrix,
        inputs,
        prm.value,
        prm.linear,
        steps.cost,
        steps.cap,
        config.folds,
        config.seed,
        config.max_fit_rows,
        steps.embedding.word_design(len(inputs.feature_columns)),
    )
    for budget in budgets:
        name = target_name(budget.target)
        dp_helper = dp_helper_candidate(
            f"DP helper C={name}",
            budget.helper,
            steps.design,
            data,
            evidence,
            budget.learned_dir,
            steps.held_out_session,
        )
        pool = [
            c
            for c in [*candidates, dp_helper]
            if not config.candidates or c.name.startswith(config.candidates)
        ]
        if worth is not None:
            budget.worth_making = worth
        elif candidates and candidates[0].scores is not None:  # the default (consensus)
            default = candidates[0].name, candidates[0].scores
            budget.beats_random = usage_beating_random(
                evidence, sweep(evidence, *default, budget.target)
            )
        choice = select(evidence, pool, budget.usage_goal, config.select_tolerance)
        if choice is not None:
            meta = steps.meta(config, target_usage=budget.target, worth_making=budget.worth_making)
            budget.selected = export_selected(
                choice,
                out / f"C{name}" / "selected",
                matrix,
                evidence,
                candidates,
                inputs.feature_columns,
                steps.embedding.artifact_entry(),
                meta,
            )
    return evidence


def logged_figures(test: Dataset) -> dict[str, float]:
    """Success and usage per episode as logged, on the held-out sessions `test`."""
    lengths = np.diff(test.start)
    return {
        "success": float(test.success.mean()),
        "usage": float((test.action * test.cost).sum() / max(test.n_sessions, 1)),
        "sessions": float(test.n_sessions),
        "mean_steps": float(lengths.mean()) if len(lengths) else 0.0,
    }


class Stopwatch:
    """Seconds per stage, to the millisecond, as the report shows them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)
