"""Off-policy evaluation with the logged propensities: IPS and doubly robust.

For a target policy π and the logging policy μ (its propensity is in every step record),
the per-step ratio is ρ_t = π(a_t | s_t) / μ(a_t | s_t) and ρ_{0:t} their running product,
clipped at `clip` (bias traded for variance). Per episode, with reward r_t (success: the
outcome z on the last step; usage: the budget units spent at t):

    IPS = Σ_t ρ_{0:t} r_t
    DR  = Σ_t ( ρ_{0:t} (r_t − Q̂(s_t, a_t)) + ρ_{0:t−1} V̂(s_t) )     (Jiang & Li, 2016)

Q̂ and V̂ = Σ_a π(a|s) Q̂(s, a) come from the tabular MDP evaluated under π (π tabulated on
the logged states of each cell), so DR is exact when the model is and unbiased when the
propensities are. The effective sample size (Σ W)² / Σ W² of the episodes' final weights W
says how many logged episodes the estimate really rests on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.dp import evaluate
from training.mdp import TabularMdp


@dataclass(frozen=True)
class Trajectories:
    """The held-out logged steps OPE reads, in session order."""

    start: np.ndarray  # per session first row; last entry = rows
    position: np.ndarray  # step index within the session
    action: np.ndarray
    propensity: np.ndarray
    cost: np.ndarray
    bins: np.ndarray
    remaining: np.ndarray
    success: np.ndarray  # per session

    @property
    def n_sessions(self) -> int:
        return len(self.start) - 1


@dataclass(frozen=True)
class Estimate:
    policy: str
    success_ips: float
    success_dr: float
    success_se: float  # of the DR estimate
    usage_ips: float
    usage_dr: float
    usage_se: float
    ess: float
    model_success: float  # the tabular model's own prediction
    model_usage: float


def tabulate(
    p_escalate: np.ndarray, bins: np.ndarray, remaining: np.ndarray, n_bins: int, cap: int
) -> np.ndarray:
    """A per-step policy as a table [bin, budget]: its mean escalation probability over the
    logged states of each cell (0 where a cell holds none)."""
    b = np.minimum(remaining, cap)
    cell = bins * (cap + 1) + b
    size = n_bins * (cap + 1)
    count = np.bincount(cell, minlength=size)
    total = np.bincount(cell, p_escalate, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, 0.0).reshape(n_bins, cap + 1)


def estimate(
    name: str,
    p_escalate: np.ndarray,
    table: np.ndarray,
    data: Trajectories,
    mdp: TabularMdp,
    cap: int,
    clip: float = 100.0,
) -> Estimate:
    """OPE of a policy that escalates with probability p_escalate[t] at each logged step
    (0 where no intervention was affordable) and whose tabular form is `table`."""
    c = mdp.cost
    p = np.where(data.remaining >= c, p_escalate, 0.0)
    taken = np.where(data.action == 1, p, 1.0 - p)
    rho = taken / np.maximum(data.propensity, 1e-12)

    success_table, usage_table = evaluate(mdp, table, cap)
    b = np.minimum(data.remaining, cap)
    b_after = np.maximum(b - c, 0)
    x = data.bins
    t_base, t_int = mdp.transitions[0][x], mdp.transitions[1][x]
    q_s = np.stack(
        [
            np.einsum("ij,ij->i", t_base, success_table[:, b].T),
            np.einsum("ij,ij->i", t_int, success_table[:, b_after].T),
        ],
        axis=1,
    )
    q_u = np.stack(
        [
            np.einsum("ij,ij->i", t_base, usage_table[:, b].T),
            c + np.einsum("ij,ij->i", t_int, usage_table[:, b_after].T),
        ],
        axis=1,
    )
    v_s = (1 - p) * q_s[:, 0] + p * q_s[:, 1]
    v_u = (1 - p) * q_u[:, 0] + p * q_u[:, 1]
    rows = np.arange(len(p))
    q_s_taken = q_s[rows, data.action]
    q_u_taken = q_u[rows, data.action]

    cumulative, before = _running_products(rho, data, clip)
    last = data.start[1:] - 1
    reward_s = np.zeros(len(p))
    reward_s[last] = data.success
    reward_u = (data.action * data.cost).astype(np.float64)
    session = np.repeat(np.arange(data.n_sessions), np.diff(data.start))

    def per_episode(values: np.ndarray) -> np.ndarray:
        return np.bincount(session, values, minlength=data.n_sessions)

    ips_s = per_episode(cumulative * reward_s)
    ips_u = per_episode(cumulative * reward_u)
    dr_s = per_episode(cumulative * (reward_s - q_s_taken) + before * v_s)
    dr_u = per_episode(cumulative * (reward_u - q_u_taken) + before * v_u)
    weights = cumulative[last]
    ess = float(weights.sum() ** 2 / max((weights**2).sum(), 1e-300))
    n = max(data.n_sessions, 1)
    k = mdp.n_bins
    # DR corrections can push a mean outside what is possible on little data; the clipped
    # mean is never further from the truth.
    return Estimate(
        policy=name,
        success_ips=float(np.clip(ips_s.mean(), 0.0, 1.0)),
        success_dr=float(np.clip(dr_s.mean(), 0.0, 1.0)),
        success_se=float(dr_s.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        usage_ips=float(np.clip(ips_u.mean(), 0.0, cap)),
        usage_dr=float(np.clip(dr_u.mean(), 0.0, cap)),
        usage_se=float(dr_u.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        ess=ess,
        model_success=float(mdp.start @ success_table[:k, cap]),
        model_usage=float(mdp.start @ usage_table[:k, cap]),
    )


def _running_products(
    rho: np.ndarray, data: Trajectories, clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """ρ_{0:t} and ρ_{0:t-1} for every row, clipped, computed on a [session, step] grid."""
    lengths = np.diff(data.start)
    grid = np.ones((data.n_sessions, int(lengths.max()) if len(lengths) else 0))
    session = np.repeat(np.arange(data.n_sessions), lengths)
    grid[session, data.position] = rho
    products = np.minimum(np.cumprod(grid, axis=1), clip)
    cumulative = products[session, data.position]
    shifted = np.ones_like(products)
    shifted[:, 1:] = products[:, :-1]
    return cumulative, shifted[session, data.position]
