"""Stages 1-2 of `escalator train` (training/pipeline.py): the logged steps as the later
stages read them, and the PRM fitted on them.

1. The dataset of the logs; each logged state's inputs as one matrix (the features that
   vary, the text embedding, then the remaining budget); the sessions split once, seeded,
   into training and held-out.
2. The PRM on the training sessions, P(success | s), and the per-action values
   P(success | s, a), calibrated on the held-out sessions (training/prm.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.dataset import Dataset, LoadSummary, check_trainable, load_dataset
from training.embed import EmbeddingSpec, embed_texts, feature_columns
from training.linear import ScoreModel
from training.prm import (
    Calibration,
    LinearPrm,
    StateInputs,
    build_prm,
    calibration,
    fit_action_values,
)

Stage = Callable[[str, int | None], Callable[[int], None]]


def no_progress(name: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class Steps:
    """The logged steps as stages 2-7 read them (stage 1's output)."""

    data: Dataset
    cap: int  # the hard per-session budget
    cost: int  # budget units one intervention spends
    # Per step: the features that vary, the text embedding, then the remaining budget (the
    # helper's last input). One matrix for everything: on a million steps each copy
    # avoided is a gigabyte.
    design: np.ndarray
    # What the PRM and the effects' learners read: `design` without the word buckets and the
    # remaining budget (a view). The words are for the agreement checks' learner
    # (training/stage_candidates.py) and the DP helper, which reads all of `design`; every
    # other model exported reads them at zero weight.
    inputs: StateInputs
    embedding: EmbeddingSpec
    held_out_session: np.ndarray  # per session: not seen by the PRM, the MDP or the DP helper

    @classmethod
    def of(
        cls, config: TrainConfig, data: Dataset, design: np.ndarray, embedding: EmbeddingSpec
    ) -> Steps:
        """Stage 1's dataset and matrix, with the cap, the cost and the sessions held out."""
        columns = feature_columns(data.features)
        text = embedding.width - embedding.word_width
        return cls(
            data,
            config.cap if config.cap is not None else int(np.max(data.limit)),
            _intervention_cost(data),
            design,
            StateInputs(design[:, : len(columns) + text], data.texts, columns, text),
            embedding,
            split_sessions(data.n_sessions, config.holdout, config.seed),
        )

    @cached_property
    def held_out(self) -> np.ndarray:
        """Per step: in a held-out session."""
        mask: np.ndarray = self.held_out_session[self.data.session]
        return mask

    @cached_property
    def train_rows(self) -> np.ndarray:
        return ~self.held_out

    @cached_property
    def outcome(self) -> np.ndarray:
        """Each step labelled with its episode's result z."""
        z: np.ndarray = self.data.success[self.data.session]
        return z

    @cached_property
    def eligible(self) -> np.ndarray:
        """Steps that began with budget for an intervention."""
        return self.data.remaining >= self.cost

    def meta(self, config: TrainConfig, **training: Any) -> dict[str, Any]:
        """What every exported artifact records of its training."""
        data = self.data
        return {
            "training": {
                "data_digest": data.digest,
                "steps": data.n_steps,
                "sessions": data.n_sessions,
                "config": asdict(config),
                "cap": self.cap,
                "cost": self.cost,
                "prm": config.prm,
                **training,
            }
        }


@dataclass(frozen=True)
class PrmFit:
    """Stage 2's output: the PRM's P(success) of every logged step, and per action."""

    value: np.ndarray  # P(success | s)
    action_values: np.ndarray  # [steps, 2]: P(success | s, a); NaN columns where a is unlogged
    linear: ScoreModel | None  # the linear PRM as the proxy's Scorer runs it (else None)
    calibration: Calibration  # of `value`, on held-out steps
    action_calibration: dict[str, Calibration]


def read_logs(config: TrainConfig) -> tuple[Dataset, LoadSummary]:
    """1. The dataset of the logs (of `config.route`), refused if it cannot train a helper."""
    data, summary = load_dataset(config.logs, config.route)
    check_trainable(data, config.min_sessions)
    return data, summary


def embed_states(
    config: TrainConfig, data: Dataset, stage: Stage = no_progress
) -> tuple[np.ndarray, EmbeddingSpec]:
    """1. Each logged state's inputs as one matrix: the features that vary, the text
    embedding, then the remaining budget."""
    spec = _embedding_spec(config, data)
    advance = stage("embedding states", data.n_steps if spec.kind != "none" else None)
    columns = feature_columns(data.features)
    dim = spec.width
    design = np.empty((data.n_steps, len(columns) + dim + 1), dtype=np.float32)
    design[:, : len(columns)] = data.features[:, columns]
    if dim:
        embed_texts(data.texts or [], spec, advance, out=design[:, len(columns) : -1])
    design[:, -1] = data.remaining
    return design, spec


def split_sessions(n_sessions: int, holdout: float, seed: int) -> np.ndarray:
    """1. The held-out sessions: a seeded share `holdout` of them, never none nor all."""
    rng = np.random.default_rng(seed)
    held_out = rng.random(n_sessions) < holdout
    if held_out.all() or not held_out.any():
        held_out[:] = False
        held_out[rng.choice(n_sessions, max(1, n_sessions // 5), False)] = True
    return held_out


def fit_prm(config: TrainConfig, steps: Steps) -> PrmFit:
    """2. The PRM and the per-action values on the training sessions, calibrated on the
    held-out ones."""
    prm_config = config.prm_config()
    data, inputs, z = steps.data, steps.inputs, steps.outcome
    prm = build_prm(prm_config)
    prm.fit(inputs, z, steps.train_rows)
    value = prm.state_value(inputs)
    actions = fit_action_values(inputs, z, data.action, steps.train_rows, prm_config)
    q = actions.predict(inputs.matrix)
    held_out = steps.held_out
    return PrmFit(
        value=value,
        action_values=q,
        linear=(
            prm.model.affine(1.0, width=steps.design.shape[1] - 1)  # as exported: every column
            if isinstance(prm, LinearPrm) and prm.model is not None
            else None
        ),
        calibration=calibration(value[held_out], z[held_out]),
        action_calibration={
            name: calibration(q[rows, a], z[rows])
            for a, name in ((0, "base"), (1, "intervention"))
            if not np.isnan(q[:, a]).any()
            for rows in [held_out & (data.action == a)]
        },
    )


def _embedding_spec(config: TrainConfig, data: Dataset) -> EmbeddingSpec:
    if config.embedding == "none":
        return EmbeddingSpec("none")
    if data.texts is None:
        # No content was captured: the helper learns from the features alone.
        return EmbeddingSpec("none")
    return EmbeddingSpec(
        config.embedding, config.embedding_dim, config.embedding_pairs, config.embedding_words
    )


def _intervention_cost(data: Dataset) -> int:
    spent = data.cost[(data.action == 1) & (data.cost > 0)]
    return int(np.bincount(spent).argmax()) if len(spent) else 1
