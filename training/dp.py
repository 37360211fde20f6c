"""Dynamic programming under an intervention budget, and the search for the penalty λ.

With the remaining budget b in the state and an intervention costing c units,

    V(x, b) = max( Σ_x' T(x'|x, base) V(x', b),
                   [b ≥ c] · ( −λ + Σ_x' T(x'|x, int) V(x', b − c) ) )

with V(SUCCESS, ·) = 1 and V(FAILURE, ·) = 0, so V is P(success) minus λ per intervention.
The budget b is a hard cap (no intervention once it is spent); λ prices each intervention so
that the *expected* interventions per episode meet a target C below the cap, the
expected-usage reading of a budget in Min et al., "Self-Regulation and Requesting
Interventions" (arXiv 2502.04576). Usage is non-increasing in λ, so λ is found by bisection:
the smallest λ whose policy uses at most C.

Everything runs on arrays [states, budgets] at once: one value-iteration sweep is two
matrix products, and the chains are transient (episodes end), so sweeps converge fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.mdp import TabularMdp


@dataclass(frozen=True)
class DpSolution:
    penalty: float  # λ
    budget: int  # the hard cap B: tables cover remaining budgets 0..B
    escalate: np.ndarray  # bool [K, B + 1]: the policy table
    value: np.ndarray  # [K + 2, B + 1]: V with the penalty
    success: float  # predicted P(success) of an episode starting with budget B
    usage: float  # predicted budget units spent per episode


def solve(
    mdp: TabularMdp, budget: int, penalty: float = 0.0, tol: float = 1e-10, max_sweeps: int = 10_000
) -> DpSolution:
    """Value iteration for one λ over every remaining budget 0..B."""
    k, c = mdp.n_bins, mdp.cost
    t_base, t_int = mdp.transitions
    value = np.zeros((k + 2, budget + 1))
    value[k] = 1.0
    q_base = q_int = value
    for _ in range(max_sweeps):
        q_base = t_base @ value
        q_int = np.full_like(value, -np.inf)
        if budget >= c:
            q_int[:, c:] = t_int @ value[:, : budget + 1 - c] - penalty
        new = np.maximum(q_base, q_int)
        new[k], new[k + 1] = 1.0, 0.0
        done = np.max(np.abs(new - value)) < tol
        value = new
        if done:
            break
    escalate = q_int[:k] > q_base[:k] + 1e-12
    success, usage = predict(mdp, escalate.astype(np.float64), budget)
    return DpSolution(penalty, budget, escalate, value, success, usage)


def evaluate(
    mdp: TabularMdp, escalate: np.ndarray, budget: int, tol: float = 1e-10, max_sweeps: int = 10_000
) -> tuple[np.ndarray, np.ndarray]:
    """P(success) and expected budget units spent from every (x, b) under a tabular policy
    that escalates with probability escalate[x, b] (forced to 0 where b < cost)."""
    k, c = mdp.n_bins, mdp.cost
    t_base, t_int = mdp.transitions
    p = np.zeros((k + 2, budget + 1))
    p[:k] = escalate
    p[:, :c] = 0.0
    success = np.zeros((k + 2, budget + 1))
    success[k] = 1.0
    usage = np.zeros((k + 2, budget + 1))
    for _ in range(max_sweeps):
        s_int = np.zeros_like(success)
        u_int = np.zeros_like(usage)
        if budget >= c:
            s_int[:, c:] = t_int @ success[:, : budget + 1 - c]
            u_int[:, c:] = c + t_int @ usage[:, : budget + 1 - c]
        new_s = (1 - p) * (t_base @ success) + p * s_int
        new_u = (1 - p) * (t_base @ usage) + p * u_int
        new_s[k], new_s[k + 1] = 1.0, 0.0
        new_u[k:] = 0.0
        done = max(np.max(np.abs(new_s - success)), np.max(np.abs(new_u - usage))) < tol
        success, usage = new_s, new_u
        if done:
            break
    return success, usage


def predict(mdp: TabularMdp, escalate: np.ndarray, budget: int) -> tuple[float, float]:
    """Predicted P(success) and usage per episode for episodes that start with budget B."""
    success, usage = evaluate(mdp, escalate, budget)
    k = mdp.n_bins
    return float(mdp.start @ success[:k, budget]), float(mdp.start @ usage[:k, budget])


def search_penalty(
    mdp: TabularMdp, budget: int, target_usage: float, iterations: int = 40
) -> DpSolution:
    """The policy with the smallest λ whose expected usage is at most `target_usage`."""
    free = solve(mdp, budget, 0.0)
    if free.usage <= target_usage + 1e-9:
        return free
    low, high = 0.0, 1.0
    best = solve(mdp, budget, high)
    for _ in range(iterations):
        middle = (low + high) / 2
        candidate = solve(mdp, budget, middle)
        if candidate.usage <= target_usage + 1e-9:
            high, best = middle, candidate
        else:
            low = middle
    return best
