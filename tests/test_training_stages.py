"""The stages of `escalator train` (training/pipeline.py), each called alone on the simulated
world's logs, give what the whole pipeline gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo.sim.world import write_logs
from training import dp
from training.pipeline import TrainConfig, TrainResult, train
from training.stage_dp import HeldOut, evaluate_helper, imitate_dp, tabular_mdp
from training.stage_inputs import Steps, embed_states, fit_prm, read_logs, split_sessions


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("stages") / "logs"
    write_logs(directory, 300, seed=1, budget=2)
    return directory


def test_the_split_is_seeded_and_never_holds_out_none_or_all() -> None:
    first = split_sessions(50, 0.2, seed=3)
    assert np.array_equal(first, split_sessions(50, 0.2, seed=3))
    assert 0 < first.sum() < 50
    assert split_sessions(50, 1e-9, seed=3).sum() == 10  # a fifth, when the draw holds none
    assert split_sessions(50, 1 - 1e-9, seed=3).sum() == 10  # or all


def test_the_stages_one_by_one_give_the_pipelines_figures(logs: Path, tmp_path: Path) -> None:
    config = TrainConfig(logs=str(logs), out=str(tmp_path / "whole"), budgets=(1.0,))
    whole: TrainResult = train(config)

    data, _ = read_logs(config)
    design, embedding = embed_states(config, data)
    assert design.shape[0] == data.n_steps
    assert np.array_equal(design[:, -1], data.remaining)  # the helper's last input
    steps = Steps.of(config, data, design, embedding)
    prm = fit_prm(config, steps)
    assert np.array_equal(prm.value, whole.state_value)
    mdp, bins = tabular_mdp(config, steps, prm)
    assert np.array_equal(mdp.transitions, whole.mdp.transitions)
    solution = dp.search_penalty(mdp, steps.cap, 1.0)
    budget = imitate_dp(config, steps, prm, mdp, bins, solution, 1.0, tmp_path / "alone")
    assert (tmp_path / "alone" / "C1" / "learned" / "helper.json").exists()
    assert budget.agreement == whole.budgets[0].agreement
    held_out = HeldOut.of(steps, mdp, bins, config.clip)
    estimates = evaluate_helper(steps, prm, bins, budget, held_out)
    assert estimates == whole.budgets[0].estimates
    never = held_out.estimate("never", np.zeros(data.n_steps))
    assert never.usage_dr == 0 and held_out.model_usage(np.zeros(data.n_steps)) == 0
