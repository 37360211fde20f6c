"""Score models on the state matrix, in the form the proxy's `Scorer` runs: linear (logistic
and ridge fits), or a linear part plus one layer of ReLU units (`fit_network`).

Feature columns are standardised for the fit (L-BFGS converges in tens of iterations instead
of thousands); embedding columns, already unit-normalised, are left alone (scaling their
near-constant buckets up only slows the fit). The scaling is folded back into the weights,
so the exported model takes the raw features the proxy computes: for
z = Σ w_j (x_j − μ_j)/σ_j + b, the raw weights are w_j/σ_j and the bias b − Σ w_j μ_j/σ_j.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.neural_network import MLPClassifier


@dataclass(frozen=True)
class HiddenLayer:
    """ReLU units on the state matrix: unit k adds output[k] · max(0, weights[k] · x + bias[k])
    to the score."""

    weights: np.ndarray  # (units, columns)
    bias: np.ndarray  # (units,)
    output: np.ndarray  # (units,)


@dataclass(frozen=True)
class ScoreModel:
    bias: float
    weights: np.ndarray  # one per column of the matrix it was fitted on
    hidden: HiddenLayer | None = None

    def logit(self, matrix: np.ndarray) -> np.ndarray:
        """The score itself (a logit for a logistic or network fit, the value for a ridge)."""
        logit: np.ndarray = matrix @ self.weights.astype(matrix.dtype) + np.float32(self.bias)
        if self.hidden is not None:
            h = self.hidden
            units = matrix @ h.weights.T.astype(matrix.dtype) + h.bias.astype(matrix.dtype)
            logit += np.maximum(units, 0) @ h.output.astype(matrix.dtype)
        return logit

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(matrix).astype(np.float64), -50, 50)))

    @property
    def width(self) -> int:
        return len(self.weights)

    def affine(self, scale: float, shift: float = 0.0, width: int | None = None) -> ScoreModel:
        """scale · score + shift, reading `width` columns (the extra ones with zero weight)."""
        pad = (width or self.width) - self.width
        hidden = None
        if self.hidden is not None:
            h = self.hidden
            hidden = HiddenLayer(np.pad(h.weights, ((0, 0), (0, pad))), h.bias, scale * h.output)
        return ScoreModel(scale * self.bias + shift, scale * np.pad(self.weights, (0, pad)), hidden)

    def spread(self, columns: np.ndarray, width: int) -> ScoreModel:
        """The same score read from `width` columns: this model's at `columns`, the others
        at zero weight."""
        weights = np.zeros(width, dtype=self.weights.dtype)
        weights[columns] = self.weights
        hidden = None
        if self.hidden is not None:
            h = self.hidden
            spread = np.zeros((len(h.bias), width), dtype=h.weights.dtype)
            spread[:, columns] = h.weights
            hidden = HiddenLayer(spread, h.bias, h.output)
        return ScoreModel(self.bias, weights, hidden)


def combine(models: list[ScoreModel], scales: list[float], shift: float = 0.0) -> ScoreModel:
    """Σ scale_i · model_i + shift, over the widest model's columns: the sum of networks is a
    network with every member's units."""
    width = max((m.width for m in models), default=0)
    terms = [m.affine(s, width=width) for m, s in zip(models, scales, strict=True)]
    layers = [t.hidden for t in terms if t.hidden is not None]
    hidden = (
        HiddenLayer(
            np.vstack([h.weights for h in layers]),
            np.concatenate([h.bias for h in layers]),
            np.concatenate([h.output for h in layers]),
        )
        if layers
        else None
    )
    weights = np.sum([t.weights for t in terms], axis=0) if terms else np.zeros(0)
    return ScoreModel(sum(t.bias for t in terms) + shift, weights, hidden)


def fit_logistic(
    matrix: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | None = None,
    l2: float = 1.0,
    max_rows: int = 200_000,
    seed: int = 0,
    balanced: bool = False,
    scaled: np.ndarray | None = None,
) -> ScoreModel:
    """L2-regularised logistic regression on at most `max_rows` of `rows` (a boolean mask or
    indices; default all), sampled with the seed; `scaled` marks the columns to standardise
    (default: all). Only the sample is copied out of `matrix`."""
    rows = _sample(len(labels), rows, max_rows, seed)
    x = matrix[rows].astype(np.float64)
    y = labels[rows].astype(np.int64)
    if y.min() == y.max():  # one class only: the model is a constant
        p = float(np.clip(y[0], 1e-4, 1 - 1e-4))
        return ScoreModel(float(np.log(p / (1 - p))), np.zeros(matrix.shape[1]))
    mean, scale = _standardisation(x, scaled)
    model = LogisticRegression(
        C=1.0 / l2,
        max_iter=500,
        class_weight="balanced" if balanced else None,
    )
    model.fit((x - mean) / scale, y)
    w = model.coef_[0] / scale
    return ScoreModel(float(model.intercept_[0] - np.dot(w, mean)), w)


RIDGE_ALPHAS = np.logspace(-1, 5, 7)


def fit_ridge(
    matrix: np.ndarray,
    target: np.ndarray,
    rows: np.ndarray,
    max_rows: int = 200_000,
    seed: int = 0,
    scaled: np.ndarray | None = None,
) -> ScoreModel:
    """Ridge regression of a continuous target on `rows` (a boolean mask), its penalty chosen
    by efficient leave-one-out over RIDGE_ALPHAS, so a noisy target is shrunk towards its
    mean rather than fitted; the same scaling and sampling as `fit_logistic`."""
    index = _sample(len(target), rows, max_rows, seed)
    if len(index) < 2:
        constant = float(target[index].mean()) if len(index) else 0.0
        return ScoreModel(constant, np.zeros(matrix.shape[1]))
    x = matrix[index].astype(np.float64)
    y = target[index].astype(np.float64)
    mean, scale = _standardisation(x, scaled)
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit((x - mean) / scale, y)
    w = model.coef_ / scale
    return ScoreModel(float(model.intercept_ - np.dot(w, mean)), w)


NETWORK_UNITS = 32
NETWORK_L2 = 10.0  # strong: a few hundred labelled states, hundreds of columns


def fit_network(
    matrix: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | None = None,
    max_rows: int = 200_000,
    seed: int = 0,
    units: int = NETWORK_UNITS,
    l2: float = NETWORK_L2,
) -> ScoreModel:
    """A one-hidden-layer ReLU network for P(label | state) (log loss, Adam, L2), on the same
    sample as `fit_logistic`, every column standardised, folded back into raw-input weights. It sees
    what a linear model cannot: conjunctions (a fragile thing held AND a wet floor) and
    thresholds in the text."""
    index = _sample(len(labels), rows, max_rows, seed)
    y = labels[index].astype(np.int64)
    if len(index) == 0 or y.min() == y.max():
        return fit_logistic(matrix, labels, index, max_rows=max_rows, seed=seed)
    x = matrix[index].astype(np.float64)
    # Every column standardised, the embedding's too: under a strong L2 penalty, unscaled
    # embedding buckets (about 1/16 each) would hardly be read at all.
    mean, scale = _standardisation(x, None)
    network = MLPClassifier((units,), alpha=l2, max_iter=1_000, random_state=seed)
    with warnings.catch_warnings():
        # Adam stopping at max_iter is fine: the L2 penalty, not convergence, sets the fit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        network.fit((x - mean) / scale, y)
    first, second = network.coefs_
    inputs = (first / scale[:, None]).T  # (units, columns), on raw inputs
    bias = network.intercepts_[0] - inputs @ mean
    hidden = HiddenLayer(inputs, bias, second[:, 0].copy())
    return ScoreModel(float(network.intercepts_[1][0]), np.zeros(matrix.shape[1]), hidden)


def _sample(n: int, rows: np.ndarray | None, max_rows: int, seed: int) -> np.ndarray:
    """The row indices a fit uses: `rows` (a mask or indices; default all), at most
    `max_rows` of them sampled with the seed."""
    if rows is None:
        index = np.arange(n)
    elif rows.dtype == bool:
        index = np.flatnonzero(rows)
    else:
        index = rows
    if len(index) > max_rows:
        index = np.random.default_rng(seed).choice(index, size=max_rows, replace=False)
    return index


def _standardisation(x: np.ndarray, scaled: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and scale; columns not `scaled` (and constant ones) are left as
    they are."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    if scaled is not None:
        mean[~scaled] = 0.0
        scale[~scaled] = 1.0
    return mean, scale
