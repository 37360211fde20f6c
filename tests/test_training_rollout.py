"""A trained helper reaches running proxies: installed atomically, reloaded over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from demo.sim.world import write_logs
from router.artifacts import load_artifact
from tests.helpers import policy_of_next_step as next_step_policy
from tests.servers import KEYS, RunningProxy
from training.pipeline import TrainConfig, train
from training.rollout import install

ADMIN_KEY = "admin-rollout"


def escalator_train(
    logs: Path, out: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`escalator train --budget 1` as a user runs it, in a fresh interpreter."""
    command = [sys.executable, "-m", "escalator", "train", "--logs", str(logs), "--out", str(out)]
    return subprocess.run(
        [*command, "--budget", "1", *options],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_train_installs_the_helper_and_reloads_the_proxy(
    start_proxy: Callable[..., RunningProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_logs(tmp_path / "logs", 400, seed=2, budget=2)
    first = train(TrainConfig(logs=str(tmp_path / "logs"), out=str(tmp_path / "a"), budgets=(1,)))
    current = tmp_path / "helpers" / "current"
    install(first.budgets[0].learned_dir, current)
    monkeypatch.setenv("ESCALATOR_ROLLOUT_ADMIN_KEY", ADMIN_KEY)
    proxy = start_proxy(
        routes={
            "agent": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "learned", "artifact": str(current)},
                "interventions": [
                    {"kind": "strong", "upstream": "strong", "model": "strong-model"}
                ],
            }
        },
        server={"admin_key_env": "ESCALATOR_ROLLOUT_ADMIN_KEY"},
    )

    def policy_of_next_step() -> str:
        return next_step_policy(proxy, "agent", KEYS["acme"])

    assert policy_of_next_step() == load_artifact(current).policy_id
    before = current.resolve()
    refused = escalator_train(
        tmp_path / "logs", tmp_path / "refused", "--cap", "1", "--install", str(current)
    )
    # 400 sessions at a cap of one: the gain cannot be told from noise, so the running
    # helper stays.
    assert refused.returncode == 3, refused.stderr
    assert "not installed" in refused.stderr and "--force" in refused.stderr
    assert current.resolve() == before
    done = escalator_train(
        tmp_path / "logs",
        tmp_path / "b",
        *("--seed", "7", "--install", str(current), "--force", "--reload", proxy.url),
        env={**os.environ, "ESCALATOR_ADMIN_KEY": ADMIN_KEY},
    )
    assert done.returncode == 0, done.stderr
    assert f"{proxy.url}: reloaded" in done.stderr
    assert "--force: installing" in done.stderr
    new = load_artifact(current).policy_id
    assert new != load_artifact(first.budgets[0].learned_dir).policy_id
    assert policy_of_next_step() == new
    assert current.is_symlink() and len(list((tmp_path / "helpers" / "current.d").iterdir())) == 2


def test_reload_with_a_wrong_key_is_reported_not_hidden(
    start_proxy: Callable[..., RunningProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.rollout import reload

    monkeypatch.setenv("ESCALATOR_ROLLOUT_ADMIN_KEY", ADMIN_KEY)
    proxy = start_proxy(server={"admin_key_env": "ESCALATOR_ROLLOUT_ADMIN_KEY"})
    (line,) = reload([proxy.url], "wrong")
    assert line.startswith(f"{proxy.url}: refused (401)")
    (gone,) = reload(["http://127.0.0.1:9"], ADMIN_KEY)
    assert "unreachable" in gone
