"""The tabular MDP over abstract states, estimated from logged transitions.

An abstract state x is the bin of the PRM's P(success | s) (bin edges at quantiles of the
logged scores, so every bin holds data). Two absorbing states close each episode: SUCCESS
(index K) and FAILURE (K + 1); a session's last step moves to one of them by its outcome.

Transitions are counted per action and shrunk towards a PRM leaf where counts are thin:

    T(x' | x, a) = (N(x, a, x') + k · L(x' | x, a)) / (N(x, a) + k)

where the leaf L moves straight to SUCCESS with probability q(x, a), the per-action PRM's
mean P(success | s, a) over the logged states in x (FAILURE otherwise). With many logged
transitions the counts dominate; with none the PRM decides (Min et al., 2025, use the PRM
the same way to make sparse tabular estimates usable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TabularMdp:
    edges: np.ndarray  # K + 1 increasing score-bin edges, 0.0 ... 1.0
    transitions: np.ndarray  # [2, K + 2, K + 2]: action, from, to
    counts: np.ndarray  # [2, K]: logged transitions out of each bin per action
    start: np.ndarray  # [K]: distribution of the first step's bin
    leaf: np.ndarray  # [2, K]: q(x, a)
    cost: int = 1  # budget units one intervention spends

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1


def score_edges(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges at quantiles of the scores, merged where they coincide; ends at 0 and 1."""
    inner = np.quantile(scores, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(scores) else []
    edges = np.unique(np.concatenate([[0.0], np.clip(inner, 0.0, 1.0), [1.0]]))
    return edges if len(edges) >= 2 else np.array([0.0, 1.0])


def assign_bins(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each score's bin, as the proxy's `table` policy looks it up (score >= edge moves up)."""
    return np.clip(np.searchsorted(edges[1:-1], scores, side="right"), 0, len(edges) - 2)


def estimate_mdp(
    bins: np.ndarray,
    action: np.ndarray,
    session_start: np.ndarray,
    success: np.ndarray,
    leaf: np.ndarray,
    edges: np.ndarray,
    prior_strength: float = 10.0,
    cost: int = 1,
) -> TabularMdp:
    """Count transitions of logged trajectories (rows sorted by session then step;
    `session_start` holds each session's first row and, last, the number of rows)."""
    k = len(edges) - 1
    n = len(bins)
    last = np.zeros(n, dtype=bool)
    last[session_start[1:] - 1] = True
    session_of = np.repeat(np.arange(len(session_start) - 1), np.diff(session_start))
    destination = np.empty(n, dtype=np.int64)
    destination[:-1] = bins[1:]
    outcome_state = np.where(success[session_of] > 0.5, k, k + 1)
    destination[last] = outcome_state[last]
    flat = (action.astype(np.int64) * (k + 2) + bins) * (k + 2) + destination
    counts = np.bincount(flat, minlength=2 * (k + 2) * (k + 2)).reshape(2, k + 2, k + 2)
    counts = counts.astype(np.float64)
    leaf_rows = np.zeros((2, k, k + 2))
    leaf_rows[:, :, k] = leaf
    leaf_rows[:, :, k + 1] = 1.0 - leaf
    transitions = np.zeros((2, k + 2, k + 2))
    out_counts = counts[:, :k].sum(axis=2)
    denominator = np.broadcast_to(out_counts[:, :, None] + prior_strength, leaf_rows.shape)
    transitions[:, :k] = np.divide(
        counts[:, :k] + prior_strength * leaf_rows,
        denominator,
        out=leaf_rows.copy(),  # nothing logged and no prior: the leaf alone
        where=denominator > 0,
    )
    transitions[:, k, k] = 1.0
    transitions[:, k + 1, k + 1] = 1.0
    first = bins[session_start[:-1]]
    start = np.bincount(first, minlength=k) / max(len(first), 1)
    return TabularMdp(edges, transitions, out_counts, start, leaf, cost)


def bin_means(
    values: np.ndarray, bins: np.ndarray, n_bins: int, fallback: np.ndarray
) -> np.ndarray:
    """Mean of `values` per bin, ignoring NaN; `fallback` where a bin has none."""
    ok = ~np.isnan(values)
    count = np.bincount(bins[ok], minlength=n_bins)
    total = np.bincount(bins[ok], values[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.where(count > 0, mean, fallback)
