"""`escalator train`: the whole offline pipeline, as the numbered steps of DESIGN.md.

1. dataset from the logs   2. PRM (+ calibration on held-out sessions)   3. tabular MDP
4. DP with the λ search per target C   5. helper imitating the DP, exported
6. off-policy evaluation against the current policy and the baselines at equal usage
7. the value of intervening per state (training/advantage.py), candidates judged on every
session by cross-fitting, the chosen helper exported as `C<target>/selected`, and the report.
Sessions are split once (seeded) into training and held-out for the PRM, the DP and its
helper; their figures are measured on held-out sessions. The candidates of stage 7 are
cross-fitted over session folds instead, so each session's figures come from models that
did not see it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from router.minilm import DIM as MINILM_DIM
from training import dp
from training.candidates import select
from training.dataset import Dataset, LoadSummary, check_trainable, load_dataset
from training.embed import EmbeddingSpec, embed_texts, feature_columns
from training.evaluation import add_evaluation, as_logged, baselines_at_usage, escalation_by_step
from training.helper import (
    Helper,
    dp_labels,
    export_learned,
    export_table,
    train_helper,
)
from training.mdp import TabularMdp, assign_bins, bin_means, estimate_mdp, score_edges
from training.ope import Estimate, Trajectories, estimate, tabulate
from training.prm import (
    ActionValues,
    Calibration,
    LinearPrm,
    PrmConfig,
    StateInputs,
    build_prm,
    calibration,
    fit_action_values,
)
from training.selection import Evidence, sweep, usage_beating_random
from training.stage_candidates import (
    Selected,
    build_candidates,
    dp_helper_candidate,
    export_selected,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `escalator train` takes; recorded in the artifacts."""

    logs: str
    out: str
    budgets: tuple[float, ...] = ()  # target interventions per episode; default 1..cap
    cap: int | None = None  # the hard per-session budget; default: the logged sessions' budget
    target_rate: float | None = None
    route: str | None = None
    seed: int = 0
    embedding: str = "hashed"  # hashed | minilm | none (hashed needs captured content)
    embedding_dim: int = 256
    prm: str = "linear"
    prm_model: str | None = None
    judge_endpoint: str | None = None
    judge_model: str | None = None
    bins: int = 10
    prior_strength: float = 10.0
    holdout: float = 0.2
    clip: float = 100.0
    l2: float = 1.0
    max_fit_rows: int = 100_000  # rows sampled for each logistic fit
    min_sessions: int = 20
    folds: int = 5  # session folds for cross-fitting the candidates
    select_tolerance: float = 0.0  # standard errors of gain traded for fewer interventions
    candidates: tuple[str, ...] = ()  # only candidates whose names start so (default: all)


@dataclass
class BudgetResult:
    target: float
    solution: dp.DpSolution
    helper: Helper
    agreement: float  # held-out share of eligible steps where the helper does what the DP does
    helper_rate: float  # held-out escalation rate of the helper on eligible steps
    learned_dir: Path
    table_dir: Path | None
    estimates: list[Estimate] = field(default_factory=list)
    selected: Selected | None = None
    # Interventions per episode worth making: where the agreement checks find the base
    # model more likely than at a random escalated step to answer otherwise; without
    # checks, where the default candidate's estimated gain most exceeds random escalation's
    # (`beats_random`). The helper is chosen at the lower of this and the target: a budget
    # is a ceiling, not a quota.
    worth_making: float | None = None
    beats_random: float | None = None

    @property
    def usage_goal(self) -> float:
        bound = self.worth_making if self.worth_making is not None else self.beats_random
        return self.target if bound is None else min(self.target, bound)


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
    def selected(self) -> Selected | None:
        """The chosen helper of the first target (what `--install` installs)."""
        return self.budgets[0].selected if self.budgets else None


Stage = Callable[[str, int | None], Callable[[int], None]]


def _no_progress(name: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


def train(config: TrainConfig, stage: Stage = _no_progress) -> TrainResult:
    import time

    started = time.perf_counter()
    timing: dict[str, float] = {}

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        timing[name] = round(time.perf_counter() - t, 3)

    # 1. Dataset.
    with timed("dataset"):
        stage("reading logs", None)(0)
        data, summary = load_dataset(config.logs, config.route)
        check_trainable(data, config.min_sessions)
    cap = config.cap if config.cap is not None else int(np.max(data.limit))
    cost = _intervention_cost(data)
    targets = config.budgets or tuple(float(c) for c in range(1, max(cap, 1) + 1))

    # Inputs: features that vary, then the embedding of the newest turns.
    with timed("embedding"):
        spec = _embedding_spec(config, data)
        advance = stage("embedding states", data.n_steps if spec.kind != "none" else None)
        columns = feature_columns(data.features)
        dim = spec.dim if spec.kind == "hashed" else MINILM_DIM if spec.kind == "minilm" else 0
        # One matrix for everything: features, embedding, then the remaining budget (the
        # helper's last input). On a million steps each copy avoided is a gigabyte.
        design = np.empty((data.n_steps, len(columns) + dim + 1), dtype=np.float32)
        design[:, : len(columns)] = data.features[:, columns]
        if dim:
            embed_texts(data.texts or [], spec, advance, out=design[:, len(columns) : -1])
        design[:, -1] = data.remaining
        matrix = design[:, :-1]
        inputs = StateInputs(matrix, data.texts, columns, dim)

    rng = np.random.default_rng(config.seed)
    held_out_session = rng.random(data.n_sessions) < config.holdout
    if held_out_session.all() or not held_out_session.any():
        held_out_session[:] = False
        held_out_session[rng.choice(data.n_sessions, max(1, data.n_sessions // 5), False)] = True
    held_out = held_out_session[data.session]
    train_rows = ~held_out
    z = data.success[data.session]

    # 2. PRM.
    with timed("prm"):
        stage("fitting the PRM", None)(0)
        prm_config = PrmConfig(
            kind=config.prm,
            l2=config.l2,
            max_rows=config.max_fit_rows,
            seed=config.seed,
            model=config.prm_model,
            endpoint=config.judge_endpoint,
            judge_model=config.judge_model,
        )
        prm = build_prm(prm_config)
        prm.fit(inputs, z, train_rows)
        value = prm.state_value(inputs)
        linear_prm = prm if isinstance(prm, LinearPrm) else None
        actions: ActionValues = fit_action_values(inputs, z, data.action, train_rows, prm_config)
        q = actions.predict(matrix)
        prm_calibration = calibration(value[held_out], z[held_out])
        action_calibration = {
            name: calibration(q[rows, a], z[rows])
            for a, name in ((0, "base"), (1, "intervention"))
            if not np.isnan(q[:, a]).any()
            for rows in [held_out & (data.action == a)]
        }

    # 3. Tabular MDP on the training sessions.
    with timed("mdp"):
        edges = score_edges(value[train_rows], config.bins)
        bins = assign_bins(value, edges)
        k = len(edges) - 1
        v_mean = bin_means(value, bins, k, np.full(k, float(z.mean())))
        leaf = np.stack([bin_means(q[:, a], bins, k, v_mean) for a in (0, 1)])
        train_data = data.subset(~held_out_session)
        train_bins = bins[train_rows]
        mdp = estimate_mdp(
            train_bins,
            train_data.action,
            train_data.start,
            train_data.success,
            leaf,
            edges,
            config.prior_strength,
            cost,
        )

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    test = data.subset(held_out_session)
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
    eligible = data.remaining >= cost
    meta = {
        "training": {
            "data_digest": data.digest,
            "steps": data.n_steps,
            "sessions": data.n_sessions,
            "config": asdict(config),
            "cap": cap,
            "cost": cost,
            "prm": config.prm,
        }
    }

    def evaluate_policy(name: str, p_step: np.ndarray) -> Estimate:
        p_test = p_step[held_out]
        table = tabulate(p_test, trajectories.bins, trajectories.remaining, k, cap)
        return estimate(name, p_test, table, trajectories, mdp, cap, config.clip)

    def model_usage(p_step: np.ndarray) -> float:
        table = tabulate(p_step[train_rows], train_bins, data.remaining[train_rows], k, cap)
        return dp.predict(mdp, table, cap)[1]

    # 4-5. DP per target, helper, export; 6. OPE per candidate.
    results: list[BudgetResult] = []
    helper_flags: dict[str, np.ndarray] = {}  # where each helper escalates, every logged step
    advance = stage("DP, helper and evaluation per budget", len(targets))
    with timed("dp_helper_ope"):
        for target in targets:
            solution = dp.search_penalty(mdp, cap, target)
            labels = dp_labels(solution, bins, data.remaining)
            helper, scores = train_helper(
                design,
                data.remaining,
                labels,
                eligible & train_rows,
                cap,
                config.target_rate,
                config.l2,
                config.max_fit_rows,
                config.seed,
                inputs.scaled,
            )
            flags = helper.escalates(scores, data.remaining)
            helper_flags[f"helper C={_target_name(target)}"] = flags
            chosen = flags & eligible
            check = eligible & held_out
            agreement = float((chosen[check] == labels[check]).mean()) if check.any() else math.nan
            name = _target_name(target)
            budget_meta = {
                **meta,
                "training": {**meta["training"], "target_usage": target},
                "evaluation": {
                    "dp_success": solution.success,
                    "dp_usage": solution.usage,
                    "penalty": solution.penalty,
                    "agreement_with_dp": agreement,
                },
            }
            learned_dir = out / f"C{name}" / "learned"
            export_learned(learned_dir, helper, columns, spec.artifact_entry(), budget_meta)
            table_dir = None
            if linear_prm is not None and linear_prm.model is not None:
                table_dir = out / f"C{name}" / "table"
                export_table(
                    table_dir,
                    linear_prm.model,
                    solution,
                    edges,
                    columns,
                    spec.artifact_entry(),
                    budget_meta,
                )
            result = BudgetResult(
                target,
                solution,
                helper,
                agreement,
                float(chosen[check].mean()) if check.any() else math.nan,
                learned_dir,
                table_dir,
            )
            table_p = solution.escalate[bins, np.minimum(data.remaining, cap)].astype(np.float64)
            candidate = evaluate_policy(f"helper C={name}", chosen.astype(np.float64))
            result.estimates = [
                candidate,
                evaluate_policy(f"DP table C={name}", table_p),
                *baselines_at_usage(
                    candidate.model_usage, value, data, eligible, evaluate_policy, model_usage
                ),
            ]
            add_evaluation(learned_dir, candidate)
            results.append(result)
            advance(1)

    # 7. Candidates, cross-fitted on every session; the chosen one per target exported.
    with timed("candidates"):
        stage("value of intervening, candidates", None)(0)
        prm_model = linear_prm.model if linear_prm is not None else None
        evidence, candidates, worth = build_candidates(
            data,
            matrix,
            inputs,
            value,
            prm_model,
            cost,
            cap,
            config.folds,
            config.seed,
            config.max_fit_rows,
        )
        for result in results:
            name = _target_name(result.target)
            dp_helper = dp_helper_candidate(
                f"DP helper C={name}",
                result.helper,
                design,
                data,
                evidence,
                result.learned_dir,
                held_out_session,
            )
            pool = [
                c
                for c in [*candidates, dp_helper]
                if not config.candidates or c.name.startswith(config.candidates)
            ]
            if worth is not None:
                result.worth_making = worth
            elif candidates and candidates[0].scores is not None:  # the default (consensus)
                default = candidates[0].name, candidates[0].scores
                points = sweep(evidence, *default, result.target)
                result.beats_random = usage_beating_random(evidence, points)
            choice = select(evidence, pool, result.usage_goal, config.select_tolerance)
            if choice is not None:
                result.selected = export_selected(
                    choice,
                    out / f"C{name}" / "selected",
                    matrix,
                    evidence,
                    candidates,
                    columns,
                    spec.artifact_entry(),
                    {
                        **meta,
                        "training": {
                            **meta["training"],
                            "target_usage": result.target,
                            "worth_making": result.worth_making,
                        },
                    },
                )

    current = as_logged(test, evaluate_policy("", data.action.astype(np.float64)))
    lengths = np.diff(test.start)
    logged = {
        "success": float(test.success.mean()),
        "usage": float((test.action * test.cost).sum() / max(test.n_sessions, 1)),
        "sessions": float(test.n_sessions),
        "mean_steps": float(lengths.mean()) if len(lengths) else 0.0,
    }
    by_step = escalation_by_step(data, held_out, helper_flags)
    timing["total"] = round(time.perf_counter() - started, 3)
    trained = TrainResult(
        config=config,
        summary=summary,
        cap=cap,
        calibration=prm_calibration,
        action_calibration=action_calibration,
        mdp=mdp,
        budgets=results,
        current=current,
        logged=logged,
        timing=timing,
        escalation_by_step=by_step,
        state_value=value,
        eligible=eligible,
        dataset=data,
        evidence=evidence,
    )
    stage("writing the report", None)(0)
    from training.report import write_report

    trained.report = write_report(trained, out)
    return trained


def _embedding_spec(config: TrainConfig, data: Dataset) -> EmbeddingSpec:
    if config.embedding == "none":
        return EmbeddingSpec("none")
    if data.texts is None:
        # No content was captured: the helper learns from the features alone.
        return EmbeddingSpec("none")
    return EmbeddingSpec(config.embedding, config.embedding_dim)


def _intervention_cost(data: Dataset) -> int:
    spent = data.cost[(data.action == 1) & (data.cost > 0)]
    return int(np.bincount(spent).argmax()) if len(spent) else 1


def _target_name(target: float) -> str:
    return f"{target:g}"
