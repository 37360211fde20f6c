"""Logistic models on the state matrix, in the form the proxy's `LinearScorer` runs.

Feature columns are standardised for the fit (L-BFGS converges in tens of iterations instead
of thousands); embedding columns, already unit-normalised, are left alone (scaling their
near-constant buckets up only slows the fit). The scaling is folded back into the weights,
so the exported model takes the raw features the proxy computes: for
z = Σ w_j (x_j − μ_j)/σ_j + b, the raw weights are w_j/σ_j and the bias b − Σ w_j μ_j/σ_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV


@dataclass(frozen=True)
class LinearModel:
    bias: float
    weights: np.ndarray  # one per column of the matrix it was fitted on

    def logit(self, matrix: np.ndarray) -> np.ndarray:
        """The linear function itself (a logit for a logistic fit, the value for a ridge)."""
        logit: np.ndarray = matrix @ self.weights.astype(matrix.dtype) + np.float32(self.bias)
        return logit

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(matrix).astype(np.float64), -50, 50)))


def fit_logistic(
    matrix: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | None = None,
    l2: float = 1.0,
    max_rows: int = 200_000,
    seed: int = 0,
    balanced: bool = False,
    scaled: np.ndarray | None = None,
) -> LinearModel:
    """L2-regularised logistic regression on at most `max_rows` of `rows` (a boolean mask or
    indices; default all), sampled with the seed; `scaled` marks the columns to standardise
    (default: all). Only the sample is copied out of `matrix`."""
    rows = _sample(len(labels), rows, max_rows, seed)
    x = matrix[rows].astype(np.float64)
    y = labels[rows].astype(np.int64)
    if y.min() == y.max():  # one class only: the model is a constant
        p = float(np.clip(y[0], 1e-4, 1 - 1e-4))
        return LinearModel(float(np.log(p / (1 - p))), np.zeros(matrix.shape[1]))
    mean, scale = _standardisation(x, scaled)
    model = LogisticRegression(
        C=1.0 / l2,
        max_iter=500,
        class_weight="balanced" if balanced else None,
    )
    model.fit((x - mean) / scale, y)
    w = model.coef_[0] / scale
    return LinearModel(float(model.intercept_[0] - np.dot(w, mean)), w)


RIDGE_ALPHAS = np.logspace(-1, 5, 7)


def fit_ridge(
    matrix: np.ndarray,
    target: np.ndarray,
    rows: np.ndarray,
    max_rows: int = 200_000,
    seed: int = 0,
    scaled: np.ndarray | None = None,
) -> LinearModel:
    """Ridge regression of a continuous target on `rows` (a boolean mask), its penalty chosen
    by efficient leave-one-out over RIDGE_ALPHAS, so a noisy target is shrunk towards its
    mean rather than fitted; the same scaling and sampling as `fit_logistic`."""
    index = _sample(len(target), rows, max_rows, seed)
    if len(index) < 2:
        constant = float(target[index].mean()) if len(index) else 0.0
        return LinearModel(constant, np.zeros(matrix.shape[1]))
    x = matrix[index].astype(np.float64)
    y = target[index].astype(np.float64)
    mean, scale = _standardisation(x, scaled)
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit((x - mean) / scale, y)
    w = model.coef_ / scale
    return LinearModel(float(model.intercept_ - np.dot(w, mean)), w)


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
