"""Stage 7 of `escalator train`: the candidates built, judged at each target and the chosen
one exported (training/candidates.py has the candidates, training/selection.py the
judging).

The evidence every candidate is judged on is the outcome's cross-fitted pseudo-outcomes
over every logged session, with the logging policy's escalation propensities clipped as in
the pseudo-outcomes themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.advantage import (
    AdvantageConfig,
    Effects,
    escalation_propensity,
    estimate_effects,
    informative,
    returns,
    session_folds,
)
from training.candidates import (
    DISAGREEMENT,
    Candidate,
    Choice,
    consensus,
    export_choice,
    score_candidates,
    stack,
)
from training.dataset import Dataset
from training.disagreement import checked, fit_disagreement, worth_making
from training.helper import Helper
from training.linear import ScoreModel
from training.prm import StateInputs
from training.selection import (
    Evidence,
    PolicyEstimate,
    baselines_at,
    replay,
    replay_rule,
)


@dataclass(frozen=True)
class Selected:
    """The helper chosen among the candidates for one target, as exported, with the
    figures it was chosen on (cross-fitted, every session)."""

    name: str
    directory: Path
    estimate: PolicyEstimate
    baselines: list[PolicyEstimate]  # never, always, random and PRM threshold at its usage
    frontier: list[PolicyEstimate]  # every candidate at every threshold judged
    flags: np.ndarray  # where it intervenes along the logged sessions (as judged)
    sessions: np.ndarray | None  # the sessions it was judged on (None: every one)

    @property
    def predicted_success(self) -> float:
        return self.estimate.success

    @property
    def predicted_usage(self) -> float:
        return self.estimate.usage

    @property
    def never(self) -> PolicyEstimate:
        return self.baselines[0]

    @property
    def compared(self) -> int:
        """How many candidates the choice was made among (for the winner's curse)."""
        return len({e.policy for e in self.frontier})


def build_candidates(
    data: Dataset,
    matrix: np.ndarray,
    inputs: StateInputs,
    value: np.ndarray,
    prm: ScoreModel | None,
    cost: int,
    cap: int,
    folds: int,
    seed: int,
    max_rows: int,
    word_design: np.ndarray | None = None,
) -> tuple[Evidence, list[Candidate], float | None]:
    """The evidence; the candidates: the consensus, one per learner and return, and
    `PRM risk`; and with agreement checks, the interventions per session worth making.

    `matrix` holds every column a helper reads but the remaining budget; `inputs.matrix`, a
    prefix of it, leaves the word buckets out, and `word_design` (training/embed.py) picks
    the columns the checks' learner may read with the words instead of the pairs. Every
    model returned reads all of `matrix`'s columns, or the features alone."""
    rows = informative(data, cost)
    m = AdvantageConfig.min_propensity
    evidence = Evidence(
        start=data.start,
        position=data.step.astype(np.int64),
        success=data.success,
        action=data.action.astype(np.int64),
        pseudo=np.zeros(data.n_steps),
        propensity=np.where(rows, np.clip(escalation_propensity(data), m, 1 - m), 0.0),
        informative=rows,
        cap=cap,
        cost=cost,
    )
    if not rows.any():
        # No step where the logging policy could have taken either action (no exploration
        # with known propensities): no effect can be estimated, and nothing is chosen.
        return evidence, [], None
    fold_of = session_folds(data.n_sessions, folds, seed)
    settings = AdvantageConfig(folds=folds, max_rows=max_rows, seed=seed)
    # Each return is learned from the features alone and from features and text, and the
    # inputs whose outcome models predict it better out of fold are kept: on a few hundred
    # sessions the text's hundreds of columns can drown a signal the features carry.
    # Every column is standardised, the embedding's too: ridge's penalty then weighs a text
    # bucket as much as a feature (measured on the benchmark's text adventure, the checks'
    # learner ranked the hidden hard steps at AUC 0.81 against 0.78 with the text unscaled).
    n_features = len(inputs.feature_columns)
    designs = [(matrix[:, :n_features], False)]
    if inputs.embedding_dim:
        designs.append((inputs.matrix, True))
    width = matrix.shape[1]
    effects: list[tuple[Effects, bool]] = []
    for name, target in returns(data, value).items():
        fitted = [
            (estimate_effects(name, target, design, data, rows, fold_of, settings), text)
            for design, text in designs
        ]
        effects.append(min(fitted, key=lambda pair: pair[0].fit_error))
    # Every candidate is judged on the outcome's pseudo-outcomes: on P(success).
    evidence = replace(evidence, pseudo=effects[0][0].pseudo)
    candidates = [_read_all(c, width) for c in score_candidates(effects, prm, value)]
    learners = [c for c in candidates if c.name != "PRM risk"]
    default = consensus(learners, rows)
    with_checks = checked(data)
    worth = None
    if with_checks.any():
        # The agreement checks label every escalated state, where the effects share an
        # episode's one outcome among its steps. Their learner joins the others, and the
        # consensus weighs each member by how well its cross-fitted score predicts the
        # checks, the checks' learner keeping half (training/candidates.py, `stack`).
        # The learner reads the features, the text with the pairs, or (`word_design`) the
        # text with the words, whichever ranks the checks best out of fold: on the benchmark's
        # text adventure the words ranked its hidden hard steps better, on the reasoning
        # agent the pairs (router/embedding.py), and the checks chose so on 5 collections.
        read: list[tuple[np.ndarray, bool, np.ndarray | None]] = [
            (design, text, None) for design, text in designs
        ]
        if word_design is not None:
            read.append((matrix[:, word_design], True, word_design))
        learned = [
            (fit_disagreement(data, design, with_checks, fold_of, max_rows, seed), text, columns)
            for design, text, columns in read
        ]
        differ, text, columns = max(learned, key=lambda fitted: fitted[0].ranking)
        model = differ.model if columns is None else differ.model.spread(columns, width)
        checks = _read_all(Candidate(DISAGREEMENT, differ.scores, model, text=text), width)
        candidates.append(checks)
        members = [*learners, checks]
        label = np.nan_to_num(1.0 - data.agreement)
        weights = stack(members, rows, with_checks, label, anchor=len(members) - 1)
        default = consensus(members, rows, weights) if weights is not None else default
        assert default.scores is not None
        worth = worth_making(data, default.scores)
    return evidence, [default, *candidates], worth


def _read_all(candidate: Candidate, width: int) -> Candidate:
    """A candidate on the text whose model reads every column (the words at zero weight)."""
    if not candidate.text or candidate.model is None:
        return candidate
    return replace(candidate, model=candidate.model.affine(1.0, width=width))


def dp_helper_candidate(
    name: str,
    helper: Helper,
    design: np.ndarray,
    data: Dataset,
    evidence: Evidence,
    directory: Path,
    sessions: np.ndarray,
) -> Candidate:
    """The DP-imitating helper as a fixed candidate, replayed with its own budget (its score
    reads the remaining budget) and judged on the held-out sessions it was not trained on."""
    # Its logit without the logged budget's term, then its own decision at every budget it
    # may have left: the design matrix's last column is the remaining budget.
    budget_weight = float(helper.model.weights[-1])
    logit = helper.model.logit(design).astype(np.float64) - budget_weight * data.remaining
    by_budget = [
        helper.escalates(
            1.0 / (1.0 + np.exp(-np.clip(logit + budget_weight * b, -50, 50))),
            np.full(data.n_steps, b),
        )
        for b in range(helper.cap + 1)
    ]
    flags = replay_rule(evidence, lambda row, left: bool(by_budget[min(left, helper.cap)][row]))
    return Candidate(name, flags=flags, sessions=sessions, directory=directory)


def export_selected(
    choice: Choice,
    directory: Path,
    matrix: np.ndarray,
    evidence: Evidence,
    candidates: list[Candidate],
    columns: list[int],
    embedding: dict[str, Any] | None,
    meta: dict[str, Any],
) -> Selected:
    """Export the chosen helper with its figures and the baselines at its usage."""
    risk = next(c.scores for c in candidates if c.name == "PRM risk")
    assert risk is not None
    baselines = baselines_at(evidence, choice.estimate.usage, risk)
    chosen_meta = {**meta, "training": {**meta["training"], "candidate": choice.candidate.name}}
    estimate = export_choice(choice, matrix, evidence, directory, columns, embedding, chosen_meta)
    spec_path = directory / "helper.json"
    spec = json.loads(spec_path.read_text())
    spec.setdefault("evaluation", {})["selection"] = {
        "method": "first-order doubly robust, cross-fitted over session folds",
        "chosen": asdict(estimate),
        "baselines": [asdict(b) for b in baselines],
    }
    spec_path.write_text(json.dumps(spec, indent=2, default=float) + "\n")
    candidate = choice.candidate
    if candidate.scores is not None:
        flags = replay(evidence, candidate.scores, choice.estimate.threshold)
    else:
        assert candidate.flags is not None
        flags = candidate.flags
    return Selected(
        candidate.name, directory, estimate, baselines, choice.frontier, flags, candidate.sessions
    )
