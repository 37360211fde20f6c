"""Process reward models: P(success | state), and per action where both were logged.

Trained on Monte-Carlo outcomes: every logged state is labelled with its episode's result z,
and the model minimises cross-entropy, so its output estimates P(z = 1 | s) under the
logging policy (and P(z = 1 | s, a) for the per-action models). Three kinds:

- `linear` (default): logistic regression on the helper's features and text embedding. CPU,
  seconds on a million steps; exports to the proxy's `Scorer`, so `threshold` and
  `table` policies can run it.
- `transformers`: a sequence classifier fine-tuned on the state text (torch; for GPU
  machines). See training/prm_transformers.py.
- `judge`: an LLM asked through any OpenAI-compatible endpoint (e.g. a vLLM server) whether
  the agent will succeed; no training. See training/prm_judge.py.

The per-action models are always linear: they give the MDP its leaf values where logged
transitions are thin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from training.linear import ScoreModel, fit_logistic


@dataclass(frozen=True)
class StateInputs:
    """What a PRM may read of each logged state."""

    matrix: np.ndarray  # features (used columns) then embedding, float32
    texts: list[str] | None
    feature_columns: list[int]  # indices into router.state.FEATURE_NAMES
    embedding_dim: int

    @property
    def scaled(self) -> np.ndarray:
        """The columns a linear fit standardises: the features, not the embedding."""
        return np.arange(self.matrix.shape[1]) < len(self.feature_columns)


@dataclass(frozen=True)
class PrmConfig:
    """How to build and fit a PRM. `escalator train` takes it from its own configuration
    (`TrainConfig.prm_config`, training/config.py, where the options are documented)."""

    kind: str = "linear"  # linear | transformers | judge
    l2: float = 1.0  # L2 penalty of the linear and per-action logistic fits
    max_rows: int = 200_000  # rows sampled for each logistic fit
    seed: int = 0
    model: str | None = None  # transformers: a local model directory
    endpoint: str | None = None  # judge: an OpenAI-compatible base URL
    judge_model: str | None = None  # judge: the model to ask
    extra: dict[str, Any] = field(default_factory=dict)  # a kind's own settings (its module)


class Prm(Protocol):
    kind: str

    def fit(self, inputs: StateInputs, success: np.ndarray, train: np.ndarray) -> None: ...

    def state_value(self, inputs: StateInputs) -> np.ndarray: ...


class LinearPrm:
    """Logistic regression on the features, with the text embedding only where it predicts
    better: the last fifth of the training rows (whole sessions but one: rows are in session
    order) decides by log-loss. On a few hundred sessions the embedding's hundreds of
    columns can make the PRM worse than predicting the base rate."""

    kind = "linear"

    def __init__(self, config: PrmConfig) -> None:
        self.config = config
        self.model: ScoreModel | None = None
        self.text = True

    def fit(self, inputs: StateInputs, success: np.ndarray, train: np.ndarray) -> None:
        c = self.config
        n_features = len(inputs.feature_columns)
        if inputs.embedding_dim and n_features:
            index = np.flatnonzero(train)
            cut = int(len(index) * 0.8)
            losses = {}
            for text in (False, True):
                columns = inputs.matrix.shape[1] if text else n_features
                model = fit_logistic(
                    inputs.matrix[:, :columns],
                    success,
                    index[:cut],
                    c.l2,
                    c.max_rows,
                    c.seed,
                    scaled=inputs.scaled[:columns],
                )
                p = np.clip(model.predict(inputs.matrix[index[cut:], :columns]), 1e-6, 1 - 1e-6)
                y = success[index[cut:]]
                losses[text] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            self.text = losses[True] < losses[False]
        columns = inputs.matrix.shape[1] if self.text else n_features
        model = fit_logistic(
            inputs.matrix[:, :columns],
            success,
            train,
            c.l2,
            c.max_rows,
            c.seed,
            scaled=inputs.scaled[:columns],
        )
        weights = np.zeros(inputs.matrix.shape[1])
        weights[:columns] = model.weights
        self.model = ScoreModel(model.bias, weights)

    def state_value(self, inputs: StateInputs) -> np.ndarray:
        assert self.model is not None, "fit first"
        return self.model.predict(inputs.matrix)


def build_prm(config: PrmConfig) -> Prm:
    if config.kind == "linear":
        return LinearPrm(config)
    if config.kind == "transformers":
        from training.prm_transformers import TransformersPrm

        return TransformersPrm(config)
    if config.kind == "judge":
        from training.prm_judge import JudgePrm

        return JudgePrm(config)
    raise ValueError(f"unknown PRM kind {config.kind!r}: linear, transformers or judge")


@dataclass(frozen=True)
class ActionValues:
    """P(success | s, a) for a = base, intervention; NaN columns where an action was never
    logged."""

    base: ScoreModel | None
    intervention: ScoreModel | None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        out = np.full((len(matrix), 2), np.nan)
        for a, model in enumerate((self.base, self.intervention)):
            if model is not None:
                out[:, a] = model.predict(matrix)
        return out


def fit_action_values(
    inputs: StateInputs,
    success: np.ndarray,
    action: np.ndarray,
    train: np.ndarray,
    config: PrmConfig,
    min_rows: int = 30,
) -> ActionValues:
    models: list[ScoreModel | None] = []
    for a in (0, 1):
        rows = train & (action == a)
        models.append(
            fit_logistic(
                inputs.matrix,
                success,
                rows,
                config.l2,
                config.max_rows,
                config.seed,
                scaled=inputs.scaled,
            )
            if rows.sum() >= min_rows
            else None
        )
    return ActionValues(models[0], models[1])


@dataclass(frozen=True)
class Calibration:
    """Reliability of predicted P(success) against held-out outcomes."""

    edges: np.ndarray
    count: np.ndarray
    predicted: np.ndarray  # mean prediction per bin (NaN where empty)
    observed: np.ndarray  # outcome rate per bin
    brier: float
    brier_base_rate: float  # the Brier score of always predicting the mean outcome
    n: int

    def table(self) -> list[tuple[str, int, float, float]]:
        return [
            (f"{lo:.1f}-{hi:.1f}", int(n), float(p), float(o))
            for lo, hi, n, p, o in zip(
                self.edges[:-1],
                self.edges[1:],
                self.count,
                self.predicted,
                self.observed,
                strict=True,
            )
            if n
        ]


def calibration(predicted: np.ndarray, outcome: np.ndarray, bins: int = 10) -> Calibration:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(which, predicted, bins) / count
        observed = np.bincount(which, outcome, bins) / count
    base = outcome.mean() if len(outcome) else 0.0
    return Calibration(
        edges=edges,
        count=count,
        predicted=mean_pred,
        observed=observed,
        brier=float(np.mean((predicted - outcome) ** 2)) if len(outcome) else float("nan"),
        brier_base_rate=float(np.mean((base - outcome) ** 2)) if len(outcome) else float("nan"),
        n=len(outcome),
    )
