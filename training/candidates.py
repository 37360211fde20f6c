"""The candidate helpers `escalator train` weighs, and the export of the one it chooses.

Candidates (each a score per state, higher: escalate first):
- `DR advantage (<return>)` and `T-learner (<return>)`: the estimated effect of intervening
  (training/advantage.py), for the outcome and, with step rewards, for the return and the
  step's own reward;
- `PRM risk`: 1 − P(success), the PRM threshold policy;
- `base disagreement`: where the base model's answers would differ from the
  intervention's, learned from the proxy's agreement checks (training/disagreement.py);
- `DP helper`: the paper's method (PRM bins → MDP → DP → an imitating helper), a fixed
  policy judged on the held-out sessions it was not trained on.

- `consensus`: the learners' standardised scores combined. Judged on a few hundred
  sessions the candidates' estimates are noisy enough that picking the best one mostly
  picks noise (measured on the benchmark's worlds: the pick often ranked the hard steps
  worse than the average learner did); a combination is never far from the best learner.
  Without agreement checks it is their mean. With them, the weights are fitted (`stack`):
  the checks label each escalated state (did the base model's answer differ?), one label
  per step where the outcome is one per episode, and a non-negative least-squares fit of
  those labels on the members' cross-fitted scores weighs each member by what it adds
  (the super learner of van der Laan et al., 2007); a member near chance gets nothing.
  The checks' own learner keeps half the weight (`ANCHOR_SHARE`): a few hundred noisy
  labels fit the other half's split loosely (measured on 7 benchmark collections, the fit
  alone ranked the hidden hard steps at a mean AUC of 0.754, the checks' learner alone at
  0.763, half and half at 0.767, and never below the learner alone by more than 0.008).
  It is the default: another candidate is chosen only when it beats the consensus at the
  target usage, paired per session, beyond its Bonferroni-corrected uncertainty.

Each score candidate is swept over thresholds on its cross-fitted scores and judged with
training/selection.py; the chosen one is refitted on every session, its threshold set so
that it intervenes as often along the logged sessions as the chosen point did, and exported
as a `learned` artifact whose score is σ(k · (τ̂(s) − θ)): 0.5 at the threshold.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from training.advantage import Effects
from training.helper import NEVER, Helper, export_learned
from training.linear import ScoreModel, combine
from training.selection import (
    Evidence,
    PolicyEstimate,
    choose,
    judge,
    paired_difference,
    replay,
    sweep,
    threshold_for_usage,
    z_for,
)


@dataclass(frozen=True)
class Candidate:
    name: str
    scores: np.ndarray | None = None  # cross-fitted, every step (score candidates)
    model: ScoreModel | None = None  # the score on the state matrix, fitted on everything
    flags: np.ndarray | None = None  # fixed candidates: where it intervenes, every step
    sessions: np.ndarray | None = None  # fixed candidates: the sessions it is judged on
    directory: Path | None = None  # fixed candidates: their artifact
    text: bool = True  # whether its model reads the text embedding (else features alone)


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    estimate: PolicyEstimate
    frontier: list[PolicyEstimate]  # every point judged, every candidate


def score_candidates(
    effects: list[tuple[Effects, bool]], prm: ScoreModel | None, value: np.ndarray
) -> list[Candidate]:
    """Candidates from each learner's effects (`True`: fitted on features and text)."""
    out = []
    for effect, text in effects:
        m0, m1 = effect.t_model
        difference = combine([m1, m0], [1.0, -1.0])
        inputs = "" if text else ", features"
        out += [
            Candidate(
                f"DR advantage ({effect.name}{inputs})",
                effect.dr_learner,
                effect.dr_model,
                text=text,
            ),
            Candidate(
                f"T-learner ({effect.name}{inputs})", effect.t_learner, difference, text=text
            ),
        ]
    risk = -np.log(np.clip(value, 1e-9, 1.0) / np.clip(1.0 - value, 1e-9, 1.0))
    negated = None if prm is None else prm.affine(-1.0)
    out.append(Candidate("PRM risk", risk, negated))
    return out


CONSENSUS = "consensus"
DISAGREEMENT = "base disagreement"  # training/disagreement.py
ANCHOR_SHARE = 0.5  # of the stacked weight kept by the member the label was made for


def consensus(
    members: list[Candidate], informative: np.ndarray, weights: np.ndarray | None = None
) -> Candidate:
    """The members' scores, each standardised on the informative steps, combined with
    `weights` (default: their mean); a model of the same kind as its members (members on the
    features alone read zero text weights). Members weighing nothing are left out of it."""
    if not informative.any():
        return Candidate(CONSENSUS)  # nothing to standardise on: judged as nothing
    if weights is None:
        weights = np.full(len(members), 1.0 / max(len(members), 1))
    scores = np.zeros(len(informative))
    models: list[ScoreModel] = []
    scales: list[float] = []
    shift = 0.0
    for member, weight in zip(members, weights, strict=True):
        assert member.scores is not None and member.model is not None
        if weight <= 0:
            continue
        mean = float(member.scores[informative].mean())
        spread = float(member.scores[informative].std()) or 1.0
        scores += weight * (member.scores - mean) / spread
        models.append(member.model)
        scales.append(weight / spread)
        shift -= weight * mean / spread
    if not models:
        return Candidate(CONSENSUS)
    text = any(m.text for m, w in zip(members, weights, strict=True) if w > 0)
    return Candidate(CONSENSUS, scores, combine(models, scales, shift), text=text)


def stack(
    members: list[Candidate],
    informative: np.ndarray,
    labelled: np.ndarray,
    label: np.ndarray,
    anchor: int | None = None,
) -> np.ndarray | None:
    """Non-negative weights of the members' standardised cross-fitted scores that best
    predict `label` (least squares, with an intercept) on the `labelled` steps, summing to
    one; None when no member predicts it at all. `anchor`, the member learned from `label`
    itself, keeps `ANCHOR_SHARE` of the weight, the fit sharing the rest."""
    columns = []
    for member in members:
        assert member.scores is not None
        mean = float(member.scores[informative].mean())
        spread = float(member.scores[informative].std()) or 1.0
        columns.append((member.scores[labelled] - mean) / spread)
    design = np.column_stack([*columns, np.ones(int(labelled.sum()))])
    fitted: np.ndarray = nnls(design, label[labelled].astype(np.float64))[0][:-1]
    total = float(fitted.sum())
    if total <= 0:
        return None
    weights = fitted / total
    if anchor is not None:
        weights = (1.0 - ANCHOR_SHARE) * weights
        weights[anchor] += ANCHOR_SHARE
    return weights


def select(
    evidence: Evidence, candidates: list[Candidate], target: float, tolerance: float
) -> Choice | None:
    frontier: list[PolicyEstimate] = []
    owner: dict[int, Candidate] = {}
    for candidate in candidates:
        if candidate.scores is not None:
            points = sweep(evidence, candidate.name, candidate.scores, target)
        elif candidate.flags is not None:
            points = [judge(evidence, candidate.name, candidate.flags, candidate.sessions)]
        else:
            continue
        for point in points:
            owner[id(point)] = candidate
            frontier.append(point)
    exportable = [p for p in frontier if owner[id(p)].model is not None or owner[id(p)].directory]
    best = choose(exportable, target, tolerance)
    default = choose([p for p in exportable if p.policy == CONSENSUS], target, tolerance)
    if best is not None and default is not None and best is not default:
        compared = len({p.policy for p in frontier})
        # On the sessions both were judged on (a fixed candidate: those it did not train on).
        gain, se = paired_difference(
            evidence,
            _flags(evidence, owner[id(best)], best),
            _flags(evidence, owner[id(default)], default),
            _sessions(owner[id(best)], owner[id(default)]),
        )
        if not gain - z_for(compared) * se > 0:
            best = default
    return None if best is None else Choice(owner[id(best)], best, frontier)


def _sessions(*candidates: Candidate) -> np.ndarray | None:
    masks = [c.sessions for c in candidates if c.sessions is not None]
    return np.logical_and.reduce(masks) if masks else None


def _flags(evidence: Evidence, candidate: Candidate, point: PolicyEstimate) -> np.ndarray:
    if candidate.scores is not None:
        return replay(evidence, candidate.scores, point.threshold)
    assert candidate.flags is not None
    return candidate.flags


def export_choice(
    choice: Choice,
    matrix: np.ndarray,
    evidence: Evidence,
    directory: Path,
    feature_columns: list[int],
    embedding: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
) -> PolicyEstimate:
    """Write the chosen helper to `directory`; return its estimate as exported."""
    if directory.exists():
        shutil.rmtree(directory)
    candidate = choice.candidate
    if candidate.model is None:
        assert candidate.directory is not None
        shutil.copytree(candidate.directory, directory)
        return choice.estimate
    if not candidate.text:
        matrix = matrix[:, : len(feature_columns)]
        embedding = None
    scores = candidate.model.logit(matrix).astype(np.float64)
    threshold = threshold_for_usage(evidence, scores, choice.estimate.usage)
    # Midway to the next lower score, so float32 here and float64 in the proxy agree on
    # the states at the boundary.
    lower = scores[scores < threshold]
    spread = float(scores[evidence.informative].std()) or 1.0
    threshold = (threshold + float(lower.max())) / 2 if len(lower) else threshold - spread / 2
    k = 4.0 / spread
    # The artifact's last input is the remaining budget, which this score does not read.
    model = candidate.model.affine(k, -k * threshold, width=candidate.model.width + 1)
    thresholds = {b: 0.5 for b in range(evidence.cost, evidence.cap + 1)}
    thresholds.update({b: NEVER for b in range(evidence.cost)})
    helper = Helper(model, thresholds, evidence.cap)
    export_learned(directory, helper, feature_columns, embedding, meta)
    return replace(choice.estimate, threshold=threshold)
