"""Judging candidate helpers on logged sessions, and choosing one.

Every candidate is a score per state (higher: escalate first) and a threshold; served, it
escalates where its score reaches the threshold while the session has budget. Its value is
estimated on the logged sessions with the cross-fitted doubly robust pseudo-outcomes
φ_t of training/advantage.py (outcome return, so the figure is P(success)):

    success(π) ≈ (1/n) Σ_i [ z_i − Σ_t e_t φ_t + Σ_t π_t φ_t ]

the logged success, minus what the logging policy's own interventions added (Σ e_t φ_t),
plus what π's add. Each φ_t is unbiased for the effect τ(s_t) when the propensities are
right, so this is unbiased for the *first-order* value of π: it adds up per-step effects
along the logged states (π_t is replayed on them with π's own budget) and ignores how an
intervention changes the states after it. It needs no product of importance ratios, so it
stays usable for deterministic policies over long episodes, where per-decision importance
sampling collapses (ESS → 0). Its standard error is over sessions. It is "not estimable" when
the logs hold too few steps of either action where π intervenes, or when most of π's
interventions fall where the logging policy had no choice (its budget was spent).

Choice: the candidates are compared at the target usage (the `--budget` of `escalator
train`: interventions per episode), and the best estimated gain over `never` wins. With a
`tolerance` > 0, the winner's cheapest threshold within that many standard errors of its
gain is taken instead (the one-standard-error rule of model selection), to spend less budget
where the data cannot tell the gain from noise; measured on 240-session logs, this rule
chose far too few interventions (the standard errors are wide), so it is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

MIN_SUPPORT = 10  # logged steps of each action where the policy intervenes
MAX_UNSUPPORTED = 0.5  # share of its interventions where the logging policy had no choice


@dataclass(frozen=True)
class Evidence:
    """The logged sessions every candidate is judged on."""

    start: np.ndarray  # per session, its first row; last entry = rows
    position: np.ndarray  # step index within the session
    success: np.ndarray  # per session, 0/1
    action: np.ndarray
    pseudo: np.ndarray  # φ_t of the outcome, 0 where not informative
    propensity: np.ndarray  # e_t, the logging policy's P(intervene); 0 where no choice
    informative: np.ndarray
    cap: int
    cost: int

    @property
    def n_sessions(self) -> int:
        return len(self.start) - 1

    @property
    def session(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_sessions), np.diff(self.start))


@dataclass(frozen=True)
class PolicyEstimate:
    policy: str
    success: float
    success_se: float
    gain: float  # success over never's
    gain_se: float
    usage: float  # interventions per episode, replayed on the logged states
    ess: float  # Kish effective number of steps the correction rests on
    support: tuple[int, int]  # logged (intervention, base) steps where the policy intervenes
    unsupported: float  # share of its interventions where the logging policy had no choice
    estimable: bool
    threshold: float = math.nan

    def interval(self) -> tuple[float, float]:
        return self.success - 1.96 * self.success_se, self.success + 1.96 * self.success_se


def replay(evidence: Evidence, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Where a thresholded policy intervenes along each logged session, with its own budget
    (the cap), as a 0/1 float per step."""
    grid, valid = _grid(evidence, scores)
    left = np.full(evidence.n_sessions, evidence.cap)
    chosen = np.zeros_like(grid)
    for p in range(grid.shape[1]):
        go = valid[:, p] & (grid[:, p] >= threshold) & (left >= evidence.cost)
        chosen[:, p] = go
        left -= evidence.cost * go
    flags: np.ndarray = chosen[evidence.session, evidence.position]
    return flags


def replay_rule(evidence: Evidence, escalates: Callable[[int, int], bool]) -> np.ndarray:
    """Where a policy given as a rule (row, budget left) -> escalate? intervenes along each
    logged session with its own budget (the cap), as a 0/1 float per step."""
    flags = np.zeros(len(evidence.position))
    for s in range(evidence.n_sessions):
        left = evidence.cap
        for row in range(int(evidence.start[s]), int(evidence.start[s + 1])):
            if left >= evidence.cost and escalates(row, left):
                flags[row] = 1.0
                left -= evidence.cost
    return flags


def paired_difference(
    evidence: Evidence, a: np.ndarray, b: np.ndarray, sessions: np.ndarray | None = None
) -> tuple[float, float]:
    """Success of policy a minus policy b (per-step intervention probabilities), estimated
    per session on the same evidence (over `sessions`, a mask; default all), and its
    standard error."""
    per = np.bincount(evidence.session, (a - b) * evidence.pseudo, minlength=evidence.n_sessions)
    if sessions is not None:
        per = per[sessions]
    return float(per.mean()) if len(per) else 0.0, _se(per)


def replay_random(evidence: Evidence, p: float) -> np.ndarray:
    """P(a policy escalating with probability p at every step intervenes there), with the
    cap: the distribution of the budget left is carried along each session."""
    n, width = evidence.n_sessions, evidence.cap + 1
    left = np.zeros((n, width))
    left[:, evidence.cap] = 1.0
    lengths = np.diff(evidence.start)
    horizon = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((n, horizon))
    c = evidence.cost
    for t in range(horizon):
        active = (t < lengths)[:, None]
        can = left[:, c:].sum(axis=1)
        out[:, t] = p * can
        moved = np.zeros_like(left)
        moved[:, : width - c] = p * left[:, c:]
        stay = left.copy()
        stay[:, c:] *= 1 - p
        left = np.where(active, stay + moved, left)
    probabilities: np.ndarray = out[evidence.session, evidence.position]
    return probabilities


def judge(
    evidence: Evidence, policy: str, escalate: np.ndarray, sessions: np.ndarray | None = None
) -> PolicyEstimate:
    """The first-order DR estimate of a policy that intervenes with probability `escalate`
    at each logged step, over `sessions` (a mask; default all)."""
    keep = np.ones(evidence.n_sessions, dtype=bool) if sessions is None else sessions
    n = int(keep.sum())
    s = evidence.session
    per = evidence.n_sessions
    gain_i = np.bincount(s, escalate * evidence.pseudo, minlength=per)[keep]
    logged_i = np.bincount(s, evidence.propensity * evidence.pseudo, minlength=per)[keep]
    success_i = evidence.success[keep] - logged_i + gain_i
    usage_i = np.bincount(s, escalate, minlength=per)[keep] * evidence.cost
    rows = keep[s]
    acting = rows & (escalate > 0)
    inf = acting & evidence.informative
    support = (int((inf & (evidence.action == 1)).sum()), int((inf & (evidence.action == 0)).sum()))
    unsupported = float((acting & ~evidence.informative).sum() / max(acting.sum(), 1))
    e = np.clip(evidence.propensity, 1e-6, 1 - 1e-6)
    weight = escalate * np.abs(evidence.action / e - (1 - evidence.action) / (1 - e))
    weight = weight[rows & evidence.informative]
    ess = float(weight.sum() ** 2 / max((weight**2).sum(), 1e-300))
    estimable = not acting.any() or (min(support) >= MIN_SUPPORT and unsupported <= MAX_UNSUPPORTED)
    return PolicyEstimate(
        policy=policy,
        success=float(np.clip(success_i.mean(), 0.0, 1.0)) if n else math.nan,
        success_se=_se(success_i),
        gain=float(gain_i.mean()) if n else math.nan,
        gain_se=_se(gain_i),
        usage=float(usage_i.mean()) if n else math.nan,
        ess=ess,
        support=support,
        unsupported=unsupported,
        estimable=estimable,
    )


def sweep(
    evidence: Evidence, policy: str, scores: np.ndarray, target_usage: float, points: int = 24
) -> list[PolicyEstimate]:
    """A candidate at thresholds from 'almost never' to the target usage (or its most)."""
    pool = scores[evidence.informative]
    if not len(pool):
        return []
    quantiles = np.quantile(pool, 1.0 - np.geomspace(0.005, 1.0, points))
    at_target = threshold_for_usage(evidence, scores, target_usage)
    thresholds = np.unique(np.append(quantiles[quantiles > at_target], at_target))[::-1]
    out = []
    for threshold in thresholds:
        estimate = judge(evidence, policy, replay(evidence, scores, float(threshold)))
        out.append(_with_threshold(estimate, float(threshold)))
    return out


def choose(
    estimates: list[PolicyEstimate], target_usage: float, tolerance: float = 0.0
) -> PolicyEstimate | None:
    """The candidate with the best estimated gain at the target usage (each at its fullest
    point within it: candidates compared at equal usage); with `tolerance` > 0, then the
    cheapest point of that candidate within `tolerance` standard errors of that gain. None
    when nothing is estimable."""
    feasible = [e for e in estimates if e.estimable and e.usage <= target_usage * 1.05]
    if not feasible:
        return None
    fullest: dict[str, PolicyEstimate] = {}
    for e in feasible:
        if e.policy not in fullest or e.usage > fullest[e.policy].usage:
            fullest[e.policy] = e
    best = max(fullest.values(), key=lambda e: e.gain)
    if tolerance <= 0:
        return best
    good = [
        e
        for e in feasible
        if e.policy == best.policy and e.gain >= best.gain - tolerance * best.gain_se
    ]
    return min(good, key=lambda e: (e.usage, -e.gain))


def threshold_for_usage(evidence: Evidence, scores: np.ndarray, usage: float) -> float:
    """The threshold at which a score intervenes `usage` times per logged session
    (bisection over the logged scores: usage falls as the threshold rises)."""
    pool = np.sort(scores[evidence.informative] if evidence.informative.any() else scores)
    if not len(pool):
        return math.inf
    if replay(evidence, scores, float(pool[0])).sum() * evidence.cost <= usage * max(
        evidence.n_sessions, 1
    ):
        return float(pool[0])  # even the lowest threshold stays within the usage
    low, high = 0, len(pool) - 1

    def used(i: int) -> float:
        flags = replay(evidence, scores, float(pool[i]))
        return float(flags.sum() * evidence.cost / max(evidence.n_sessions, 1))

    while high - low > 1:
        middle = (low + high) // 2
        if used(middle) > usage:
            low = middle
        else:
            high = middle
    return float(pool[high])


def z_for(compared: int) -> float:
    """The two-sided 95% normal quantile, Bonferroni-corrected for `compared` tests."""
    return NormalDist().inv_cdf(1 - 0.025 / max(compared, 1))


def _with_threshold(estimate: PolicyEstimate, threshold: float) -> PolicyEstimate:
    return replace(estimate, threshold=threshold)


def _grid(evidence: Evidence, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(evidence.start)
    width = int(lengths.max()) if len(lengths) else 0
    grid = np.full((evidence.n_sessions, width), -np.inf)
    valid = np.zeros((evidence.n_sessions, width), dtype=bool)
    grid[evidence.session, evidence.position] = scores
    valid[evidence.session, evidence.position] = True
    return grid, valid


def _se(values: np.ndarray) -> float:
    n = len(values)
    return float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else math.nan


def baselines_at(evidence: Evidence, usage: float, risk: np.ndarray) -> list[PolicyEstimate]:
    """never, always (while the budget lasts), and random and PRM-threshold set to `usage`
    along the logged sessions."""
    never = judge(evidence, "never", np.zeros(len(evidence.pseudo)))
    always = judge(evidence, "always", replay(evidence, np.zeros(len(evidence.pseudo)), 0.0))
    low, high = 0.0, 1.0
    for _ in range(30):  # random: the rate whose expected usage is `usage`
        middle = (low + high) / 2
        used = replay_random(evidence, middle).sum() * evidence.cost / max(evidence.n_sessions, 1)
        low, high = (middle, high) if used < usage else (low, middle)
    random = judge(evidence, "random (equal usage)", replay_random(evidence, (low + high) / 2))
    pool = np.sort(risk[evidence.informative]) if evidence.informative.any() else np.sort(risk)
    lo, hi = 0, len(pool) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        flags = replay(evidence, risk, float(pool[mid]))
        if flags.sum() * evidence.cost / max(evidence.n_sessions, 1) > usage:
            lo = mid
        else:
            hi = mid
    threshold = judge(
        evidence, "PRM threshold (equal usage)", replay(evidence, risk, float(pool[hi]))
    )
    return [never, always, random, threshold]


def usage_beating_random(evidence: Evidence, points: list[PolicyEstimate]) -> float | None:
    """The usage at which a candidate's estimated gain (its `sweep`) most exceeds random
    escalation's at the same usage: past it, its further interventions do no better than
    random ones. None when no point is estimable."""
    ratios = np.linspace(0.0, 1.0, 41)
    random = [judge(evidence, "random", replay_random(evidence, float(p))) for p in ratios]
    usage = np.array([r.usage for r in random])
    gain = np.array([r.gain for r in random])
    estimable = [e for e in points if e.estimable]
    if not estimable:
        return None
    best = max(estimable, key=lambda e: e.gain - float(np.interp(e.usage, usage, gain)))
    return best.usage
