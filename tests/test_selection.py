"""The value of intervening and the candidates' estimates, on logs whose answer is known.

Every session has six steps and exactly one hard one, at a random position; the state shows
whether the step is hard (one feature). The base model gets a hard step right with
probability 0.4 and the intervention with 0.9; routine steps are always right, and a wrong
hard step fails the session *silently* (nothing in the later states shows it). The logging
policy escalates at random with probability 0.3. So: never succeeds 40 %, the policy that
escalates exactly at the hard step 90 % with one intervention per episode.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from training.advantage import (
    AdvantageConfig,
    escalation_propensity,
    estimate_effects,
    informative,
    session_folds,
)
from training.candidates import (
    CONSENSUS,
    Candidate,
    consensus,
    export_choice,
    select,
    stack,
)
from training.dataset import Dataset
from training.gate import check
from training.linear import ScoreModel
from training.selection import (
    Evidence,
    choose,
    judge,
    replay,
    replay_random,
    sweep,
    usage_beating_random,
)

STEPS = 6
EPSILON = 0.3


def silent_logs(sessions: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    hard_at = rng.integers(0, STEPS, sessions)
    n = sessions * STEPS
    position = np.tile(np.arange(STEPS), sessions)
    session = np.repeat(np.arange(sessions), STEPS)
    hard = position == hard_at[session]
    action = (rng.random(n) < EPSILON).astype(np.int8)
    right = np.where(action[hard] == 1, 0.9, 0.4) > rng.random(sessions)
    features = np.zeros((n, 1), dtype=np.float32)
    features[:, 0] = hard
    return Dataset(
        sessions=[f"t/s{i}" for i in range(sessions)],
        success=right.astype(np.float64),
        start=np.arange(0, n + 1, STEPS),
        session=session.astype(np.int32),
        step=position.astype(np.int32),
        action=action,
        propensity=np.where(action == 1, EPSILON, 1 - EPSILON),
        policy_action=np.zeros(n, dtype=np.int8),
        remaining=np.full(n, 10, dtype=np.int32),
        limit=np.full(n, 10, dtype=np.int32),
        cost=action.astype(np.int32),
        p_escalate=np.zeros(n, dtype=np.float32),
        features=features,
        reward=np.zeros(n),
        agreement=np.full(n, np.nan),
        texts=None,
        digest="",
    )


@pytest.fixture(scope="module")
def logged() -> tuple[Dataset, Evidence, np.ndarray]:
    data = silent_logs(3000)
    rows = informative(data, 1)
    folds = session_folds(data.n_sessions, 5, 0)
    z = data.success[data.session]
    effects = estimate_effects("outcome", z, data.features, data, rows, folds, AdvantageConfig())
    evidence = Evidence(
        start=data.start,
        position=data.step.astype(np.int64),
        success=data.success,
        action=data.action.astype(np.int64),
        pseudo=effects.pseudo,
        propensity=np.where(rows, escalation_propensity(data), 0.0),
        informative=rows,
        cap=4,
        cost=1,
    )
    return data, evidence, effects.dr_learner


def test_the_value_of_intervening_is_found_where_the_mistake_is_silent(
    logged: tuple[Dataset, Evidence, np.ndarray],
) -> None:
    data, _, tau = logged
    hard = data.features[:, 0] == 1
    # The true effect is 0.5 at the hard step and 0 elsewhere.
    assert tau[hard].mean() == pytest.approx(0.5, abs=0.1)
    assert abs(tau[~hard].mean()) < 0.1


def test_first_order_estimates_recover_never_and_the_oracle(
    logged: tuple[Dataset, Evidence, np.ndarray],
) -> None:
    data, evidence, _ = logged
    never = judge(evidence, "never", np.zeros(data.n_steps))
    oracle = judge(evidence, "oracle", (data.features[:, 0] == 1).astype(np.float64))
    for estimate, truth in ((never, 0.4), (oracle, 0.9)):
        low, high = estimate.interval()
        assert low - 0.01 <= truth <= high + 0.01, estimate
    assert oracle.usage == 1.0 and oracle.estimable
    assert oracle.gain - 1.96 * oracle.gain_se > 0.4
    assert check(oracle, None, None).install
    assert not check(never, None, None).install  # no gain: nothing to install


def bare_evidence(data: Dataset, informative: bool, cap: int) -> Evidence:
    """Evidence with no pseudo-outcomes: for what replay and support do alone."""
    rows = np.full(data.n_steps, informative)
    return Evidence(
        data.start,
        data.step.astype(np.int64),
        data.success,
        data.action.astype(np.int64),
        np.zeros(data.n_steps),
        np.where(rows, EPSILON, 0.0),
        rows,
        cap=cap,
        cost=1,
    )


def test_replay_spends_the_policys_own_budget() -> None:
    data = silent_logs(50)
    evidence = bare_evidence(data, informative=True, cap=2)
    always = replay(evidence, np.zeros(data.n_steps), 0.0).reshape(-1, STEPS)
    assert (always == [1, 1, 0, 0, 0, 0]).all()  # the first two steps, then no budget
    p = replay_random(evidence, 0.5).reshape(-1, STEPS)[0]
    # P(budget left at step t) * 0.5: 1, 1, then P(fewer than two of t coins came up).
    assert p[:3] == pytest.approx([0.5, 0.5, 0.5 * 0.75])
    assert replay_random(evidence, 1.0).reshape(-1, STEPS)[0].sum() == pytest.approx(2.0)


def test_the_chosen_helper_escalates_at_the_hard_step_at_the_target_usage(
    logged: tuple[Dataset, Evidence, np.ndarray],
) -> None:
    data, evidence, tau = logged
    points = sweep(evidence, "DR", tau, target_usage=1.0)
    chosen = choose(points, 1.0)
    assert chosen is not None
    assert chosen.usage == pytest.approx(1.0, abs=0.05)
    assert chosen.success == pytest.approx(0.9, abs=0.05)
    hard = data.features[:, 0] == 1
    flags = replay(evidence, tau, chosen.threshold) == 1
    assert flags[hard].mean() > 0.95 and flags[~hard].mean() < 0.02


def test_a_budget_is_spent_only_while_it_beats_random_escalation(
    logged: tuple[Dataset, Evidence, np.ndarray],
) -> None:
    # One hard step per session: past one intervention, the helper's next ones fall on
    # routine steps, where escalating at random does as well.
    _, evidence, tau = logged
    usage = usage_beating_random(evidence, sweep(evidence, "DR", tau, target_usage=4.0))
    assert usage == pytest.approx(1.0, abs=0.1)


def test_a_policy_the_logs_cannot_support_is_not_estimable() -> None:
    data = silent_logs(200)
    # The logging policy never had a choice.
    evidence = bare_evidence(data, informative=False, cap=4)
    estimate = judge(evidence, "x", (data.features[:, 0] == 1).astype(np.float64))
    assert not estimate.estimable
    assert choose([estimate], 1.0) is None
    assert not check(estimate, None, None).install


def test_the_consensus_is_kept_unless_another_candidate_beats_it_beyond_doubt(
    logged: tuple[Dataset, Evidence, np.ndarray],
) -> None:
    data, evidence, tau = logged
    rng = np.random.default_rng(1)
    width = data.features.shape[1]
    hard = data.features[:, 0].astype(np.float64)
    learned = Candidate("DR", tau, ScoreModel(0.0, np.ones(width)))
    noise = Candidate("noise", rng.normal(size=data.n_steps), ScoreModel(0.0, np.zeros(width)))
    mixed = consensus([learned, noise], evidence.informative)
    assert mixed.scores is not None
    assert mixed.scores[hard == 1].mean() > mixed.scores[hard == 0].mean() + 0.5
    # The consensus model is the members' models averaged, each standardised.
    assert mixed.model is not None and mixed.model.weights[0] > 0
    # Against a candidate no better than it, the consensus stays.
    choice = select(evidence, [mixed, learned, noise], 1.0, 0.0)
    assert choice is not None and choice.candidate.name in (CONSENSUS, "DR")
    # A candidate that is clearly better wins.
    oracle = Candidate("oracle", hard, ScoreModel(0.0, np.ones(width)))
    worse = consensus([noise], evidence.informative)
    choice = select(evidence, [worse, oracle], 1.0, 0.0)
    assert choice is not None and choice.candidate.name == "oracle"


def test_the_checks_weigh_the_consensus_members_by_what_each_predicts(
    logged: tuple[Dataset, Evidence, np.ndarray],
) -> None:
    data, evidence, tau = logged
    rng = np.random.default_rng(2)
    width = data.features.shape[1]
    hard = data.features[:, 0] == 1
    # Checks on a third of the steps: the base model differs at most hard steps, rarely
    # elsewhere.
    labelled = rng.random(data.n_steps) < 0.33
    differ = np.where(hard, rng.random(data.n_steps) < 0.7, rng.random(data.n_steps) < 0.05)
    learned = Candidate("DR", tau, ScoreModel(0.0, np.ones(width)))
    noise = Candidate("noise", rng.normal(size=data.n_steps), ScoreModel(0.0, -np.ones(width)))
    weights = stack([learned, noise], evidence.informative, labelled, differ.astype(float))
    assert weights is not None and weights.sum() == pytest.approx(1.0)
    assert weights[0] > 0.9
    stacked = consensus([learned, noise], evidence.informative, weights)
    assert stacked.scores is not None and stacked.model is not None
    assert stacked.model.weights[0] > 0  # the noise's model, opposite, weighs little or nothing
    # The member learned from the checks themselves keeps half, the fit shares the rest.
    anchored = stack([learned, noise], evidence.informative, labelled, differ.astype(float), 1)
    assert anchored is not None and anchored.sum() == pytest.approx(1.0)
    assert anchored[1] == pytest.approx(0.5 + 0.5 * weights[1])
    # A member that predicts the checks backwards gets nothing; none at all: no weights.
    backwards = Candidate("backwards", -tau, ScoreModel(0.0, -np.ones(width)))
    assert stack([backwards], evidence.informative, labelled, differ.astype(float)) is None


def test_a_consensus_of_feature_only_learners_exports_without_text(
    logged: tuple[Dataset, Evidence, np.ndarray], tmp_path: Path
) -> None:
    from router.artifacts import load_artifact

    data, evidence, tau = logged
    member = Candidate("DR", tau, ScoreModel(0.0, np.array([1.0])), text=False)
    mixed = consensus([member], evidence.informative)
    choice = select(evidence, [mixed], 1.0, 0.0)
    assert choice is not None
    # The state matrix also holds text columns; the consensus reads none of them.
    matrix = np.hstack([data.features, np.zeros((data.n_steps, 8), dtype=np.float32)])
    export_choice(choice, matrix, evidence, tmp_path / "h", [0], {"kind": "hashed"}, {})
    artifact = load_artifact(tmp_path / "h")
    assert artifact.scorer.embedding is None and artifact.scorer.features == ("step",)


def test_agreement_checks_find_the_hard_step_from_escalated_states_alone() -> None:
    from training.disagreement import MARGIN, checked, fit_disagreement, worth_making

    data = silent_logs(400)
    rng = np.random.default_rng(1)
    hard = data.features[:, 0] == 1
    escalated = data.action == 1
    # The base model differs from the intervention where it gets a hard step wrong (0.6).
    differs = hard & (rng.random(data.n_steps) < 0.6)
    checks = np.where(escalated, np.where(differs, 0.0, 1.0), np.nan)
    with_checks = replace(data, agreement=checks)
    rows = checked(with_checks)
    assert (rows == escalated).all()
    folds = session_folds(data.n_sessions, 5, 0)
    fitted = fit_disagreement(with_checks, data.features, rows, folds, 10_000, 0)
    assert fitted.scores[hard].min() > fitted.scores[~hard].max()  # every state, checked or not
    # Worth making: a quarter more than one per session, its hard step, where the base
    # model differs (0.6) far more often than at a routine step (never).
    assert worth_making(with_checks, fitted.scores) == pytest.approx(MARGIN, rel=0.15)
    # Routine steps differing now and then (strong and weak both wrong) leave the count.
    noisy = np.where(escalated, np.where(differs | (rng.random(data.n_steps) < 0.05), 0, 1), np.nan)
    assert worth_making(replace(data, agreement=noisy), fitted.scores) == pytest.approx(
        MARGIN, rel=0.25
    )
    # A score that ranks nothing: no count.
    assert worth_making(with_checks, -fitted.scores) is None
    # A label that never varies (a base model that always answers the same) is left out.
    assert not checked(replace(data, agreement=np.where(escalated, 1.0, np.nan))).any()


def test_the_count_worth_making_stands_for_every_state_whatever_the_logging_policy() -> None:
    """A logging policy that already escalates the hard step leaves exploration's escalations
    on routine states only; weighted by how likely each state was checked, the checks of
    both directions still count the one hard step per session."""
    from training.disagreement import MARGIN, worth_making

    data = silent_logs(600)
    rng = np.random.default_rng(2)
    hard = data.features[:, 0] == 1
    flipped = rng.random(data.n_steps) < EPSILON
    action = (hard ^ flipped).astype(np.int8)
    checked = (action == 1) | (rng.random(data.n_steps) < EPSILON)  # base steps at ε
    differs = hard & (rng.random(data.n_steps) < 0.6)
    logged = replace(
        data,
        action=action,
        policy_action=hard.astype(np.int8),
        propensity=np.where(flipped, EPSILON, 1 - EPSILON),
        agreement=np.where(checked, np.where(differs, 0.0, 1.0), np.nan),
    )
    score = hard + 0.01 * rng.random(data.n_steps)
    assert worth_making(logged, score) == pytest.approx(MARGIN, rel=0.15)
    # Labels that are noise, a score that ranks nothing: no count either way.
    noise = np.where(checked, (rng.random(data.n_steps) < 0.5).astype(float), np.nan)
    assert worth_making(replace(logged, agreement=noise), score) is None


def test_checks_of_base_steps_label_the_states_escalations_seldom_reach() -> None:
    """With checks of escalated steps alone, too few differ to learn from; the proxy's checks
    of a share of the base steps (server/agreement_checks.py) are labels like any other."""
    from training.disagreement import checked, fit_disagreement

    data = silent_logs(400)
    rng = np.random.default_rng(4)
    hard = data.features[:, 0] == 1
    differs = hard & (rng.random(data.n_steps) < 0.6)
    label = np.where(differs, 0.0, 1.0)
    # Escalations were rare (the first 20 sessions explored, the rest did not).
    escalated = (data.action == 1) & (data.session < 20)
    escalated_only = replace(data, agreement=np.where(escalated, label, np.nan))
    assert not checked(escalated_only).any()
    of_base_steps = (data.action == 0) & (rng.random(data.n_steps) < 0.3)
    both = replace(data, agreement=np.where(escalated | of_base_steps, label, np.nan))
    rows = checked(both)
    assert rows[data.action == 0].sum() > rows[data.action == 1].sum()
    folds = session_folds(data.n_sessions, 5, 0)
    fitted = fit_disagreement(both, data.features, rows, folds, 10_000, 0)
    assert fitted.scores[hard].min() > fitted.scores[~hard].max()
    assert fitted.ranking > 0.8


def test_the_checks_learner_sees_a_conjunction_a_linear_model_cannot() -> None:
    """A step is hard where two facts hold at once (a fragile thing held AND a wet floor),
    each of which also shows on routine steps: no linear score ranks the hard steps first,
    the network does, and its out-of-fold ranking of the checks chooses it."""
    from training.disagreement import fit_disagreement

    data = silent_logs(600)
    rng = np.random.default_rng(2)
    facts = rng.random((data.n_steps, 2)) < 0.5
    hard = facts[:, 0] == facts[:, 1]  # both or neither: no line separates it
    differs = np.where(hard, rng.random(data.n_steps) < 0.7, rng.random(data.n_steps) < 0.05)
    escalated = data.action == 1
    with_checks = replace(data, agreement=np.where(escalated, np.where(differs, 0.0, 1.0), np.nan))
    matrix = facts.astype(np.float32)
    folds = session_folds(data.n_sessions, 5, 0)
    ridge = fit_disagreement(with_checks, matrix, escalated, folds, 10_000, 0, ("ridge",))
    best = fit_disagreement(with_checks, matrix, escalated, folds, 10_000, 0)
    assert best.learner == "network" and best.ranking > ridge.ranking
    assert best.scores[hard].min() > best.scores[~hard].max()  # every state, out of fold
    assert abs(ridge.scores[hard].mean() - ridge.scores[~hard].mean()) < 0.1


def test_a_model_spread_over_more_columns_scores_as_it_did_on_its_own() -> None:
    """A learner fitted on some of the state's columns (the checks' learner on the words
    instead of the pairs) is exported reading all of them, the others at zero weight."""
    from training.linear import fit_network

    rng = np.random.default_rng(4)
    wide = rng.normal(size=(300, 6)).astype(np.float32)
    columns = np.array([0, 3, 5])
    network = fit_network(wide[:, columns], (wide[:, 0] * wide[:, 3] > 0).astype(int), None)
    spread = network.spread(columns, 6)
    assert spread.width == 6 and spread.hidden is not None
    assert np.allclose(spread.logit(wide), network.logit(wide[:, columns]), atol=1e-5)
    wide[:, [1, 2, 4]] = 9.0  # the columns it was not fitted on change nothing
    assert np.allclose(spread.logit(wide), network.logit(wide[:, columns]), atol=1e-5)


def test_a_network_helper_scores_in_the_proxy_as_it_did_in_training(tmp_path: Path) -> None:
    """A consensus of a linear and a network member exports its ReLU units; the proxy's
    scorer reads the same score from the raw features."""
    from router.artifacts import load_artifact
    from router.state import FEATURE_NAMES
    from training.linear import combine, fit_network

    data = silent_logs(200)
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(data.n_steps, 3)).astype(np.float32)
    network = fit_network(matrix, (matrix[:, 0] * matrix[:, 1] > 0).astype(int), None)
    assert network.hidden is not None
    model = combine([network, ScoreModel(0.5, np.array([1.0, 0.0, -2.0]))], [0.5, 0.25], 0.1)
    assert np.allclose(
        model.logit(matrix),
        0.5 * network.logit(matrix) + 0.25 * (matrix @ [1, 0, -2] + 0.5) + 0.1,
        atol=1e-4,
    )
    evidence = bare_evidence(data, informative=True, cap=2)
    scores = model.logit(matrix).astype(np.float64)
    choice = select(evidence, [Candidate(CONSENSUS, scores, model, text=False)], 1.0, 0.0)
    assert choice is not None
    columns = [FEATURE_NAMES.index(n) for n in ("step", "obs_failed", "repeated_actions")]
    export_choice(choice, matrix, evidence, tmp_path / "h", columns, None, {})
    artifact = load_artifact(tmp_path / "h")
    hidden = artifact.scorer.hidden
    assert hidden is not None and len(hidden.rows) == len(network.hidden.bias)
    # The exported score is sigmoid(k * (score - threshold)): the same order of states.
    proxy = [
        artifact.scorer.score(
            dict(zip(artifact.scorer.features, map(float, row), strict=True)), [], 1
        )
        for row in matrix[:50]
    ]
    assert np.array_equal(np.argsort(proxy, kind="stable"), np.argsort(scores[:50], kind="stable"))
    # Installed, it is judged by the gate as the proxy would decide (its units included).
    from training.gate import judge_installed
    from training.selection import replay_rule

    logged = np.zeros((data.n_steps, len(FEATURE_NAMES)), dtype=np.float32)
    logged[:, columns] = matrix
    _, flags, note = judge_installed(tmp_path / "h", replace(data, features=logged), evidence)
    scorer = artifact.scorer

    def decides(row: int, left: int) -> bool:
        state = dict(zip(scorer.features, map(float, matrix[row]), strict=True))
        return scorer.score(state, [], left) >= artifact.threshold(left)

    assert note is None and flags is not None and flags.any()
    assert np.array_equal(flags, replay_rule(evidence, decides))


def test_logs_whose_budget_often_ran_out_carry_a_caution() -> None:
    from training.evaluation import CROWDED_SHARE, crowded_sessions, crowding_caution

    data = silent_logs(10)
    eligible = data.remaining >= 1
    assert crowded_sessions(data, eligible) == 0.0  # a budget of 10 never runs out in 6 steps
    assert crowding_caution(crowded_sessions(data, eligible)) is None
    # Four sessions spend their budget by their fourth step.
    spent = np.isin(data.session, [0, 3, 5, 8]) & (data.step >= 3)
    share = crowded_sessions(data, eligible & ~spent)
    assert share == pytest.approx(0.4) and share > CROWDED_SHARE
    caution = crowding_caution(share)
    assert caution is not None and caution.startswith("In 40% of the logged sessions")


def test_the_report_says_which_bound_held_and_why() -> None:
    from training.report import _bound_line

    assert "checks say 1.20 interventions" in _bound_line(1.2, 2.0, 1.2, checked=True)
    no_count = _bound_line(None, 2.0, 2.0, checked=True)
    assert no_count.startswith("The agreement checks show no step clearly likelier")
    assert "at 2.00 interventions per episode" in no_count
    assert _bound_line(None, 2.0, 2.0, checked=False).startswith("Without agreement checks")
