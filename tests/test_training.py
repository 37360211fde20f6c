"""The training pipeline end to end on the simulated world, where the right escalation
points are known, and its treatment of bad and thin logs."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo.sim.world import SimWorld, evaluate, policy_behaviour, random_behaviour, write_logs
from router.artifacts import load_artifact
from router.policies.base import PolicyContext, build_policy
from router.state import FEATURE_NAMES
from training.dataset import DatasetError, load_dataset
from training.pipeline import TrainConfig, TrainResult, train

CONTEXT = PolicyContext("agent", "strong")
CAP = 3
EPISODES = 3000  # ground-truth rollouts per policy
SEARCH_EPISODES = 1000  # per step of a baseline's bisection to the helper's usage


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    root = tmp_path_factory.mktemp("train")
    write_logs(root / "logs", 4000, seed=1, budget=CAP)
    return train(TrainConfig(logs=str(root / "logs"), out=str(root / "out"), budgets=(1.0,)))


def at_usage(make, usage: float, increasing: bool) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Bisect a baseline's knob until its ground-truth usage matches `usage`."""
    low, high = 0.0, 1.0
    for _ in range(12):
        middle = (low + high) / 2
        result = evaluate(SimWorld(), make(middle), SEARCH_EPISODES, 99, CAP)
        if (result["interventions"] < usage) == increasing:
            low = middle
        else:
            high = middle
    return evaluate(SimWorld(), make((low + high) / 2), EPISODES, 99, CAP)


@pytest.mark.slow
def test_trained_helper_escalates_at_critical_steps_and_beats_baselines(
    trained: TrainResult,
) -> None:
    budget = trained.budgets[0]
    learned = build_policy({"kind": "learned", "artifact": str(budget.learned_dir)}, CONTEXT)
    helper = evaluate(SimWorld(), policy_behaviour(learned), EPISODES, 99, CAP)
    usage = helper["interventions"]
    assert 0.7 <= usage <= 1.3  # the λ search aimed at one intervention per episode

    prm = str(budget.table_dir)
    threshold = at_usage(
        lambda t: policy_behaviour(
            build_policy({"kind": "threshold", "threshold": t, "prm": prm}, CONTEXT)
        ),
        usage,
        increasing=False,
    )
    rand = at_usage(random_behaviour, usage, increasing=True)
    assert abs(threshold["interventions"] - usage) < 0.1
    assert abs(rand["interventions"] - usage) < 0.1
    # Escalations land on critical steps of solvable tasks (random: ~16% of them do).
    assert helper["at_critical"] >= 0.5
    assert helper["at_critical"] > threshold["at_critical"] + 0.15
    # And that is worth it: at equal usage the helper succeeds clearly more often.
    assert helper["success"] >= threshold["success"] + 0.08
    assert helper["success"] >= rand["success"] + 0.15
    # The DP table itself, run by the proxy's `table` kind, uses about its target and, with
    # no more interventions than random spends here, succeeds far more often.
    table = build_policy({"kind": "table", "artifact": prm}, CONTEXT)
    planned = evaluate(SimWorld(), policy_behaviour(table), EPISODES, 99, CAP)
    assert planned["interventions"] <= min(usage, 1.2)
    assert planned["success"] >= rand["success"] + 0.1


def test_artifacts_load_in_the_proxy_and_record_their_provenance(trained: TrainResult) -> None:
    budget = trained.budgets[0]
    learned = load_artifact(budget.learned_dir, FEATURE_NAMES)
    table = load_artifact(budget.table_dir, FEATURE_NAMES)  # type: ignore[arg-type]
    assert learned.kind == "learned" and table.kind == "table"
    training = learned.meta["training"]
    assert len(training["data_digest"]) == 64
    assert training["config"]["seed"] == 0 and training["target_usage"] == 1.0
    assert training["sessions"] == 4000
    evaluation = learned.meta["evaluation"]
    assert {"dp_success", "dp_usage", "agreement_with_dp", "ope"} <= set(evaluation)
    assert len(table.actions[0]) == CAP + 1  # one column per remaining budget 0..cap
    assert not any(row[0] for row in table.actions)  # nothing is bought with no budget
    assert (Path(trained.report or "")).read_text().startswith("# Escalator helper training")
    for plot in ("success_vs_interventions", "prm_calibration", "escalation_timing"):
        assert (Path(budget.learned_dir).parents[1] / "plots" / f"{plot}.png").stat().st_size > 0


def test_report_compares_against_baselines_at_equal_usage(trained: TrainResult) -> None:
    estimates = {e.policy: e for e in trained.budgets[0].estimates}
    assert set(estimates) == {
        "helper C=1",
        "DP table C=1",
        "never",
        "always",
        "random (equal usage)",
        "PRM threshold (equal usage)",
    }
    helper = estimates["helper C=1"]
    for name in ("random (equal usage)", "PRM threshold (equal usage)"):
        assert estimates[name].model_usage == pytest.approx(helper.model_usage, abs=0.05)
    assert estimates["never"].usage_dr == 0.0
    assert all(e.ess > 1 for e in estimates.values())
    assert trained.calibration.brier < trained.calibration.brier_base_rate


def test_training_is_reproducible(tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", 600, seed=3, budget=2)
    outs = []
    for run in ("a", "b"):
        config = TrainConfig(logs=str(tmp_path / "logs"), out=str(tmp_path / run), budgets=(1.0,))
        train(config)
        outs.append((tmp_path / run / "C1" / "learned" / "weights.json").read_text())
    assert outs[0] == outs[1]


def test_off_policy_estimate_matches_the_truth_for_a_logged_rate(tmp_path: Path) -> None:
    """IPS and DR of random(0.2), estimated from logs that mix several rates, agree with
    the simulator's ground truth within their error bars."""
    from training.mdp import estimate_mdp
    from training.ope import Trajectories, estimate

    write_logs(tmp_path / "logs", 6000, seed=5, budget=CAP)
    data, _ = load_dataset(tmp_path / "logs")
    bins = np.zeros(data.n_steps, dtype=np.int64)  # a one-state model: DR must still hold
    edges = np.array([0.0, 1.0])
    mdp = estimate_mdp(
        bins, data.action, data.start, data.success, np.full((2, 1), 0.5), edges, 10.0
    )
    trajectories = Trajectories(
        data.start,
        data.step,
        data.action.astype(np.int64),
        data.propensity,
        data.cost,
        bins,
        data.remaining,
        data.success,
    )
    p = np.full(data.n_steps, 0.2)
    result = estimate("random 0.2", p, np.full((1, CAP + 1), 0.2), trajectories, mdp, CAP)
    truth = evaluate(SimWorld(), random_behaviour(0.2), 20_000, 7, CAP)
    assert result.success_dr == pytest.approx(truth["success"], abs=3 * result.success_se + 0.01)
    assert result.usage_dr == pytest.approx(truth["interventions"], abs=3 * result.usage_se + 0.02)
    assert result.success_ips == pytest.approx(truth["success"], abs=0.05)


def test_dataset_reads_gzip_and_counts_what_it_leaves_out(tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", 50, seed=2, budget=2, compress=True)
    lines = [
        "not json at all",
        json.dumps({"kind": "weather"}),
        json.dumps(
            {
                "schema": 1,
                "kind": "step",
                "tenant": "t",
                "session": "x",
                "step": "zero",
                "decision": {"action": "base"},
            }
        ),
        # A session with steps but no outcome, and one with a missing step.
        *[json.dumps(_step("t", "open", i)) for i in range(2)],
        *[json.dumps(_step("t", "gappy", i)) for i in (0, 2)],
        json.dumps({"kind": "outcome", "tenant": "t", "session": "gappy", "success": True}),
        # A pass-through request: nothing decided.
        json.dumps({"kind": "step", "tenant": "t", "session": "p", "step": 0, "decision": None}),
    ]
    (tmp_path / "logs" / "extra.jsonl").write_text("\n".join(lines) + "\n")
    data, summary = load_dataset(tmp_path / "logs")
    assert summary.files == 2
    assert data.n_sessions == 50
    assert summary.malformed == 3
    assert summary.sessions_without_outcome == 1
    assert summary.incomplete_sessions == 1
    assert summary.unrouted_steps == 1
    text = "\n".join(summary.lines_of_text())
    assert "skipped 3 malformed lines" in text and "extra.jsonl:1" in text


def _step(tenant: str, session: str, step: int, action: str = "base") -> dict[str, object]:
    return {
        "schema": 1,
        "kind": "step",
        "tenant": tenant,
        "session": session,
        "step": step,
        "route": "agent",
        "state": {"features": {"step": step}},
        "decision": {
            "action": action,
            "propensity": 1.0,
            "p_escalate": 0.1,
            "budget_before": 1,
            "budget_after": 1,
        },
    }


@pytest.mark.parametrize(
    ("make_logs", "message"),
    [
        (lambda d: None, "no step-log segments"),
        (
            lambda d: (d / "a.jsonl").write_text(json.dumps(_step("t", "s", 0)) + "\n"),
            "no session outcome in the logs",
        ),
        (
            lambda d: write_logs(d, 100, rates=(0.0,)),
            "no step with an intervention: run with exploration > 0",
        ),
        (lambda d: write_logs(d, 5, rates=(0.3,)), "only 5 sessions with an outcome"),
        (lambda d: (d / "b.jsonl.gz").write_bytes(b"not gzip"), "the logs hold no step records"),
    ],
)
def test_unusable_logs_stop_with_a_clear_message(tmp_path: Path, make_logs, message: str) -> None:  # type: ignore[no-untyped-def]
    logs = tmp_path / "logs"
    logs.mkdir()
    make_logs(logs)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "escalator",
            "train",
            "--logs",
            str(logs),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    with pytest.raises(DatasetError):
        train(TrainConfig(logs=str(logs), out=str(tmp_path / "o2")))


def test_train_command_prints_a_table_and_writes_helpers(tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", 400, seed=4, budget=2)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "escalator",
            "train",
            "--logs",
            str(tmp_path / "logs"),
            "--out",
            str(tmp_path / "out"),
            "--budget",
            "0.5",
            "--budget",
            "1",
            "--seed",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for expected in ("C=0.5", "C=1", "never", "random", "PRM threshold", "report:"):
        assert expected in done.stderr
    assert (tmp_path / "out" / "C0.5" / "learned" / "helper.json").exists()
    assert (tmp_path / "out" / "C0.5" / "selected" / "helper.json").exists()
    assert (tmp_path / "out" / "C1" / "table" / "helper.json").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "escalator", "train", "--logs", "x", "--out", "y", "--budget", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--budget must be positive" in bad.stderr


def test_gzip_segment_cut_short_is_read_up_to_the_damage(tmp_path: Path) -> None:
    write_logs(tmp_path, 30, seed=6, budget=2, compress=True)
    (segment,) = tmp_path.glob("*.gz")
    raw = gzip.decompress(segment.read_bytes())
    segment.write_bytes(gzip.compress(raw)[:-40])  # a writer killed mid-file
    data, summary = load_dataset(tmp_path)
    assert summary.malformed >= 1
    assert 0 < data.n_sessions <= 30


def two_logged_steps(logs: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulated logs of 30 sessions written to `logs`; the first two step records."""
    write_logs(logs, 30, seed=3, budget=2)
    lines = (logs / "sim-3-00000.jsonl").read_text().splitlines()
    first, second = [json.loads(line) for line in lines if '"kind":"step"' in line][:2]
    return first, second


def test_step_feedback_is_summed_per_step_by_index_or_request_id(tmp_path: Path) -> None:
    first, second = two_logged_steps(tmp_path / "logs")
    feedback = [
        {
            "kind": "feedback",
            "tenant": "sim",
            "session": first["session"],
            "step": 0,
            "reward": 0.5,
        },
        {
            "kind": "feedback",
            "tenant": "sim",
            "session": first["session"],
            "request_id": first["id"],
            "reward": 0.25,
        },
        {
            "kind": "feedback",
            "tenant": "sim",
            "session": second["session"],
            "request_id": second["id"],
            "reward": -1,
        },
        {"kind": "feedback", "tenant": "sim", "session": "nobody", "step": 0, "reward": 1.0},
        {
            "kind": "feedback",
            "tenant": "sim",
            "session": first["session"],
            "step": 0,
            "reward": "a lot",
        },
    ]
    with (tmp_path / "logs" / "feedback.jsonl").open("w") as handle:
        for record in feedback:
            handle.write(json.dumps({"schema": 1, "ts": 0.0, **record}) + "\n")
    data, summary = load_dataset(tmp_path / "logs")
    row = {(data.sessions[s], int(data.step[i])): i for i, s in enumerate(data.session)}
    assert data.reward[row[(f"sim/{first['session']}", 0)]] == 0.75
    assert data.reward[row[(f"sim/{second['session']}", second["step"])]] == -1.0
    assert data.reward.sum() == -0.25 and data.has_step_rewards
    assert summary.feedback == 4 and summary.feedback_unmatched == 1 and summary.malformed == 1


def test_agreement_checks_are_read_per_step_by_index_or_request_id(tmp_path: Path) -> None:
    first, second = two_logged_steps(tmp_path / "logs")
    checks = [
        {"session": first["session"], "step": 0, "agreement": 1.0},
        {"session": second["session"], "request_id": second["id"], "agreement": 0},
        {"session": "nobody", "step": 0, "agreement": 1.0},
        {"session": first["session"], "step": 0, "agreement": 2.0},
        {"session": first["session"], "step": 0, "agreement": True},
    ]
    with (tmp_path / "logs" / "checks.jsonl").open("w") as handle:
        for record in checks:
            line = {"schema": 1, "kind": "agreement", "ts": 0.0, "tenant": "sim", **record}
            handle.write(json.dumps(line) + "\n")
    data, summary = load_dataset(tmp_path / "logs")
    row = {(data.sessions[s], int(data.step[i])): i for i, s in enumerate(data.session)}
    assert data.agreement[row[(f"sim/{first['session']}", 0)]] == 1.0
    assert data.agreement[row[(f"sim/{second['session']}", second["step"])]] == 0.0
    assert int((~np.isnan(data.agreement)).sum()) == 2
    assert summary.agreement_checks == 3 and summary.malformed == 2
    assert summary.feedback_unmatched == 0  # an unmatched check is not feedback


def test_logs_without_exploration_train_the_dp_but_choose_no_helper(tmp_path: Path) -> None:
    from demo.worlds import base as worlds
    from demo.worlds import make_world
    from router.decision import BASE, Decision

    def fixed(index: int) -> worlds.Behaviour:
        def decide(state, budget, rng):  # type: ignore[no-untyped-def]
            if state.step == 1 and budget.can_intervene:
                return Decision("strong", 1.0, 1.0, "fixed", "fixed")
            return Decision(BASE, 0.0, 1.0, "fixed", "fixed")

        return decide

    logs = tmp_path / "logs"
    worlds.write_logs(logs, make_world("dataagent"), 100, 1, 2, behaviour_factory=fixed)
    result = train(TrainConfig(logs=str(logs), out=str(tmp_path / "out"), cap=2))
    # Every logged action was certain (propensity 1): no effect of intervening can be
    # estimated, so nothing is chosen and the report says so.
    assert result.selected is None
    assert "No candidate is estimable" in (tmp_path / "out" / "report.md").read_text()
