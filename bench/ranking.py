"""How well each candidate ranks the hidden hard steps, offline: no serving, no online play.

    python bench/ranking.py --world textgame --world gridtext --seed 0 --seed 1000
    python bench/ranking.py --world reasoning --steps          # with step rewards logged

Per world and seed: 240 episodes collected as bench/quality.py collects them (exploration
0.3, C = 4), each step's hidden `hard` flag noted beside the proxy's records; the trainer's
stages 1-2 (dataset, embedding, PRM) and its candidates (training/stage_candidates.py); then
each candidate's ROC AUC of its cross-fitted scores against the hard flags over every logged
step, the interventions per episode the trainer judges worth making and the hard steps per
episode. A minute or two per collection, where a quality run takes ten: the quick way to see
whether a change to the helper's inputs or learners ranks the critical steps better, before
measuring it online.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.worlds import NAMES, make_world  # noqa: E402
from demo.worlds.base import write_logs  # noqa: E402


class Flagged:
    """A world that notes each step's hidden difficulty as it is played, by (episode, step)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.name = world.name
        self.hard: dict[tuple[int, int], bool] = {}
        self._index = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)

    def new_episode(self, index: int, seed: int) -> Any:
        self._index = index
        return self.world.new_episode(index, seed)

    def act(self, episode: Any, escalated: bool) -> float:
        self.hard[(self._index, episode.step)] = bool(episode.hard)
        reward: float = self.world.act(episode, escalated)
        return reward


def rank_once(name: str, seed: int, steps: bool, episodes: int) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    from training.config import TrainConfig
    from training.stage_candidates import build_candidates
    from training.stage_inputs import Steps, embed_states, fit_prm, read_logs

    world = Flagged(make_world(name))
    with tempfile.TemporaryDirectory(prefix="escalator-ranking-") as tmp:
        logs = Path(tmp) / "logs"
        write_logs(logs, world, episodes, seed=seed, budget=4, step_rewards=steps)
        config = TrainConfig(logs=str(logs), out=str(Path(tmp) / "out"), cap=4, seed=seed)
        data, _ = read_logs(config)
        design, embedding = embed_states(config, data, lambda *_: lambda *_: None)
        inputs = Steps.of(config, data, design, embedding)
        prm = fit_prm(config, inputs)
    hard = np.array(
        [
            world.hard[(int(data.sessions[s].rsplit("-", 1)[1]), int(step))]
            for s, step in zip(data.session, data.step, strict=True)
        ]
    )
    _, candidates, worth = build_candidates(
        data,
        inputs.design[:, :-1],
        inputs.inputs,
        prm.value,
        prm.linear,
        inputs.cost,
        inputs.cap,
        config.folds,
        config.seed,
        config.max_fit_rows,
        inputs.embedding.word_design(len(inputs.inputs.feature_columns)),
    )
    figures = {c.name: roc_auc_score(hard, c.scores) for c in candidates if c.scores is not None}
    figures["worth making / episode"] = float("nan") if worth is None else worth
    figures["hard steps / episode"] = float(hard.sum() / data.n_sessions)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", action="append", choices=NAMES, help="repeat; default all")
    parser.add_argument("--seed", action="append", type=int, help="repeat; default 0")
    parser.add_argument("--steps", action="store_true", help="log the step rewards too")
    parser.add_argument("--episodes", type=int, default=240, help="collected episodes")
    args = parser.parse_args(argv)
    for name in args.world or NAMES:
        for seed in args.seed or [0]:
            try:
                figures = rank_once(name, seed, args.steps, args.episodes)
            except ImportError as exc:
                print(f"skipping world {name}: {exc}")
                break
            print(f"\n{name}, seed {seed}{' (step rewards)' if args.steps else ''}")
            for label, value in figures.items():
                kind = "" if "/" in label else "AUC "
                print(f"  {label:<44}{kind}{value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
