"""The dynamic program against brute force on small MDPs, the λ search, monotonicity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.dp import evaluate, predict, search_penalty, solve
from training.mdp import TabularMdp, assign_bins, estimate_mdp, score_edges


def random_mdp(seed: int, k: int = 3, cost: int = 1) -> TabularMdp:
    """A transient MDP: every state ends the episode with probability at least 0.2."""
    rng = np.random.default_rng(seed)
    transitions = np.zeros((2, k + 2, k + 2))
    for a in (0, 1):
        for x in range(k):
            row = rng.dirichlet(np.ones(k + 2))
            row[:k] *= 0.8
            row[k:] += (1 - row.sum()) * row[k:] / row[k:].sum()
            transitions[a, x] = row
    transitions[:, k, k] = transitions[:, k + 1, k + 1] = 1.0
    edges = np.linspace(0, 1, k + 1)
    start = rng.dirichlet(np.ones(k))
    return TabularMdp(edges, transitions, np.ones((2, k)), start, np.full((2, k), 0.5), cost)


def brute_force(mdp: TabularMdp, budget: int, penalty: float) -> tuple[float, np.ndarray]:
    """The best deterministic table by enumerating all of them (cells with b < cost are
    base by force, so only the others are enumerated)."""
    k = mdp.n_bins
    free = [(x, b) for x in range(k) for b in range(mdp.cost, budget + 1)]
    best, best_table = -np.inf, None
    for bits in itertools.product((0.0, 1.0), repeat=len(free)):
        table = np.zeros((k, budget + 1))
        for (x, b), bit in zip(free, bits, strict=True):
            table[x, b] = bit
        success, usage = evaluate(mdp, table, budget)
        objective = (success - penalty * usage)[:k, budget] @ mdp.start
        if objective > best + 1e-12:
            best, best_table = objective, table
    assert best_table is not None
    return float(best), best_table


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("penalty", [0.0, 0.05, 0.2])
def test_dp_matches_brute_force(seed: int, penalty: float) -> None:
    mdp = random_mdp(seed, k=3)
    budget = 2
    solution = solve(mdp, budget, penalty)
    best, _ = brute_force(mdp, budget, penalty)
    dp_objective = solution.value[:3, budget] @ mdp.start
    assert dp_objective == pytest.approx(best, abs=1e-8)
    # The table the DP returns achieves that optimum when evaluated on its own.
    assert solution.success - penalty * solution.usage == pytest.approx(best, abs=1e-8)


def test_dp_with_cost_two_matches_brute_force() -> None:
    mdp = random_mdp(11, k=2, cost=2)
    solution = solve(mdp, 4, 0.0)
    best, _ = brute_force(mdp, 4, 0.0)
    assert solution.success == pytest.approx(best, abs=1e-8)
    assert not solution.escalate[:, :2].any()  # below the cost nothing can be bought


def test_hand_solved_mdp() -> None:
    """One risky state: base succeeds with 0.3, the intervention with 0.9; a safe state
    before it. With budget 1 the only sensible escalation is at the risky state."""
    k = 2  # 0 = safe, 1 = risky
    t = np.zeros((2, 4, 4))
    t[:, 0, 1] = 1.0  # safe always leads to risky, whatever is done
    t[0, 1, 2], t[0, 1, 3] = 0.3, 0.7
    t[1, 1, 2], t[1, 1, 3] = 0.9, 0.1
    t[:, 2, 2] = t[:, 3, 3] = 1.0
    mdp = TabularMdp(
        np.array([0, 0.5, 1]), t, np.ones((2, k)), np.array([1.0, 0.0]), np.zeros((2, k))
    )
    solution = solve(mdp, 1, 0.0)
    assert solution.escalate.tolist() == [[False, False], [False, True]]
    assert solution.success == pytest.approx(0.9)
    assert solution.usage == pytest.approx(1.0)
    # Priced above its gain (0.6), the intervention is not worth it.
    assert not solve(mdp, 1, 0.61).escalate.any()
    assert solve(mdp, 1, 0.59).escalate[1, 1]


@pytest.mark.parametrize("seed", range(5))
def test_more_budget_never_lowers_predicted_success(seed: int) -> None:
    mdp = random_mdp(seed, k=4)
    solution = solve(mdp, 6, 0.0)
    assert np.all(np.diff(solution.value[:4], axis=1) >= -1e-9)
    successes = [solve(mdp, b, 0.0).success for b in range(7)]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(successes))


@pytest.mark.parametrize("seed", range(5))
def test_penalty_search_meets_target_usage(seed: int) -> None:
    mdp = random_mdp(seed, k=4)
    budget = 5
    free = solve(mdp, budget, 0.0)
    for target in (0.25, 0.5, 1.0):
        solution = search_penalty(mdp, budget, target)
        assert solution.usage <= target + 1e-9
        # No cheaper λ meets it: slightly less penalty uses more than the target
        # (unless λ is already 0 and the free policy fits under the target).
        if solution.penalty > 0:
            assert solve(mdp, budget, solution.penalty * 0.999).usage > target - 1e-9
        assert solution.success <= free.success + 1e-9
    assert search_penalty(mdp, budget, free.usage + 1).penalty == 0.0


def test_dp_on_fifty_budgets_solves_all_at_once() -> None:
    mdp = random_mdp(3, k=12)
    solution = solve(mdp, 50, 0.01)
    assert solution.escalate.shape == (12, 51)
    assert predict(mdp, solution.escalate.astype(float), 50) == pytest.approx(
        (solution.success, solution.usage)
    )


def test_estimated_transitions_count_logged_steps_and_outcomes() -> None:
    # Two sessions: bins 0 -> 1 -> success, and 1 (escalated) -> failure.
    bins = np.array([0, 1, 1])
    action = np.array([0, 0, 1])
    start = np.array([0, 2, 3])
    success = np.array([1.0, 0.0])
    leaf = np.full((2, 2), 0.5)
    edges = np.array([0.0, 0.5, 1.0])
    mdp = estimate_mdp(bins, action, start, success, leaf, edges, prior_strength=0.0)
    assert mdp.transitions[0, 0].tolist() == [0, 1, 0, 0]
    assert mdp.transitions[0, 1].tolist() == [0, 0, 1, 0]
    assert mdp.transitions[1, 1].tolist() == [0, 0, 0, 1]
    assert mdp.start.tolist() == [0.5, 0.5]
    # Where nothing was logged the PRM leaf decides.
    thin = estimate_mdp(bins, action, start, success, leaf, edges, prior_strength=10.0)
    assert thin.transitions[1, 0].tolist() == [0, 0, 0.5, 0.5]


def test_bins_agree_with_the_proxy_table_lookup() -> None:
    from router.artifacts import HelperArtifact

    scores = np.random.default_rng(0).random(1000)
    edges = score_edges(scores, 5)
    artifact = HelperArtifact(
        "table",
        "x",
        None,
        {},
        tuple(edges),
        tuple((i,) for i in range(5)),
        {},  # type: ignore[arg-type]
    )
    probes = np.concatenate([scores[:200], edges])
    assert [artifact.table_action(s, 0) for s in probes] == assign_bins(probes, edges).tolist()
