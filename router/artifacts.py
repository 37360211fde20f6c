"""Helper artifacts: what `training/` exports and the `learned` and `table` policies load.

A directory holding `helper.json` and a weights file in a non-executable format (JSON):

    helper.json  {"format": 1, "kind": "learned" | "table",
                  "features": ["step", "last_tool_error", ...],   # StepState.features, in order
                  "embedding": {"kind": "hashed", "dim": 256, ...}
                             | {"kind": "minilm", "max_tokens": 40,
                                "fallback": {"kind": "hashed", "dim": 256}} | null,
                  "weights": "weights.json",
                  "thresholds": {"0": 0.9, "1": 0.6, "default": 0.5},   # learned: per budget
                  "bins": [0.0, 0.25, 0.5, 0.75, 1.0],                   # table: score bins
                  "actions": [[0, 1, 1], ...],       # table: per bin, per remaining budget 0..B
                  "training": {"data_digest": "...", ...}, "evaluation": {...}}
    weights.json {"bias": b, "features": [...], "embedding": [...], "budget": w,
                  "fallback_embedding": [...],   # for the fallback embedding, if any
                  "hidden": {"features": [[...], ...], "embedding": [[...], ...],
                             "budget": [...], "bias": [...], "output": [...]}}  # optional

A `minilm` embedding needs the `embed` extra; where it is not installed the helper uses its
fallback (hashed n-grams with their own weights) or, lacking one, its features alone, and
says so in a warning: it never fails to load for that reason.

The weights define a score over the features, the embedding and the remaining budget: a
linear part plus, optionally, a layer of ReLU units (one row of input weights per unit, split
as the linear part's is; unit k adds output[k] · max(0, row_k · x + bias[k])), squashed by a
logistic: for `learned` it is P(escalating pays off); for `table` it is the
PRM's P(success), binned and looked up with the remaining budget. Everything is checked at
load: a malformed, incomplete or non-finite artifact raises ArtifactError and is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter, mul
from pathlib import Path
from typing import Any, Protocol

from router.embedding import HashedNgrams
from router.state import Message

log = logging.getLogger("escalator.helper")

FORMAT = 1
KINDS = ("learned", "table")


class ArtifactError(ValueError):
    """A helper artifact that cannot be used; the message says what is wrong."""


class Embedder(Protocol):
    @property
    def width(self) -> int: ...

    def embed_messages(self, messages: Sequence[Message]) -> list[float]: ...


@dataclass(frozen=True, slots=True)
class HiddenUnits:
    """ReLU units over the scorer's inputs (features, embedding, remaining budget, in order).

    Each row holds the weights of the inputs some unit reads (`read` picks them): a network
    the trainer fitted on part of the embedding (the words but not the pairs) weighs the
    rest at zero, and skipping those inputs nearly halves its cost per decision."""

    rows: tuple[tuple[float, ...], ...]  # per unit, the weights of `columns`
    bias: tuple[float, ...]
    output: tuple[float, ...]
    columns: tuple[int, ...]  # the inputs some unit reads
    read: Callable[[list[float]], Sequence[float]]  # those inputs, of all of them


def hidden_units(
    rows: Sequence[Sequence[float]], bias: tuple[float, ...], output: tuple[float, ...]
) -> HiddenUnits:
    """Units with full-width `rows`, kept only where some unit's weight is not zero."""
    width = len(rows[0]) if rows else 0
    columns = [i for i in range(width) if any(row[i] for row in rows)]
    if len(columns) > 1:
        read: Callable[[list[float]], Sequence[float]] = itemgetter(*columns)
    else:
        read = lambda inputs: [inputs[i] for i in columns]  # noqa: E731  (itemgetter of one is not a tuple)
    kept = tuple(tuple(row[i] for i in columns) for row in rows)
    return HiddenUnits(kept, bias, output, tuple(columns), read)


@dataclass(frozen=True, slots=True)
class Scorer:
    features: tuple[str, ...]
    embedding: Embedder | None
    bias: float
    feature_weights: tuple[float, ...]
    embedding_weights: tuple[float, ...]
    budget_weight: float
    hidden: HiddenUnits | None = None

    def score(
        self, features: Mapping[str, float], messages: Sequence[Message], remaining: int
    ) -> float:
        inputs = [features.get(name, 0.0) for name in self.features]
        z = self.bias + self.budget_weight * remaining + sum(map(mul, self.feature_weights, inputs))
        if self.embedding is not None:
            vector = self.embedding.embed_messages(messages)
            z += sum(map(mul, self.embedding_weights, vector))
            inputs += vector
        if self.hidden is not None:
            inputs.append(float(remaining))
            h = self.hidden
            read = h.read(inputs)
            for row, bias, out in zip(h.rows, h.bias, h.output, strict=True):
                unit = bias + sum(map(mul, row, read))
                if unit > 0.0:
                    z += out * unit
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


@dataclass(frozen=True, slots=True)
class HelperArtifact:
    kind: str
    digest: str
    scorer: Scorer
    thresholds: Mapping[str, float]
    bins: tuple[float, ...]
    actions: tuple[tuple[int, ...], ...]
    meta: Mapping[str, Any]

    @property
    def policy_id(self) -> str:
        return f"{self.kind}@{self.digest[:8]}"

    def threshold(self, remaining: int) -> float:
        return self.thresholds.get(str(remaining), self.thresholds["default"])

    def table_action(self, score: float, remaining: int) -> int:
        """1 to escalate, 0 not, for a score and remaining budget (capped at the table's)."""
        row = 0
        while row + 1 < len(self.bins) - 1 and score >= self.bins[row + 1]:
            row += 1
        actions = self.actions[row]
        return actions[min(remaining, len(actions) - 1)]


def load_artifact(
    directory: str | Path, known_features: Sequence[str] | None = None
) -> HelperArtifact:
    """Load and check a helper artifact directory; raise ArtifactError saying what is wrong."""
    directory = Path(directory)
    spec = _read_json(directory / "helper.json")
    if spec.get("format") != FORMAT:
        raise ArtifactError(
            f"{directory}: helper.json format {spec.get('format')!r}, expected {FORMAT}"
        )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ArtifactError(f"{directory}: kind {kind!r}, expected one of {', '.join(KINDS)}")
    features = spec.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ArtifactError(f"{directory}: features must be a list of feature names")
    if known_features is not None:
        unknown = sorted(set(features) - set(known_features))
        if unknown:
            raise ArtifactError(
                f"{directory}: features this proxy does not compute: {', '.join(unknown)}"
            )
    embedding, embedding_key = _embedding(directory, spec.get("embedding"))
    weights_name = spec.get("weights")
    if (
        not isinstance(weights_name, str)
        or "/" in weights_name
        or not weights_name.endswith(".json")
    ):
        raise ArtifactError(f"{directory}: weights must name a .json file in the directory")
    weights = _read_json(directory / weights_name)
    embedding_dim = embedding.width if embedding else 0
    scorer = Scorer(
        features=tuple(features),
        embedding=embedding,
        bias=_finite(weights.get("bias"), "bias", directory),
        feature_weights=_vector(weights.get("features", []), len(features), "features", directory),
        embedding_weights=_vector(
            weights.get(embedding_key, []), embedding_dim, embedding_key, directory
        ),
        budget_weight=_finite(weights.get("budget", 0.0), "budget", directory),
        hidden=_hidden(
            weights.get("hidden"), len(features), embedding_dim, embedding_key, directory
        ),
    )
    thresholds: dict[str, float] = {}
    bins: tuple[float, ...] = ()
    actions: tuple[tuple[int, ...], ...] = ()
    if kind == "learned":
        raw = spec.get("thresholds")
        if not isinstance(raw, dict) or "default" not in raw:
            raise ArtifactError(f"{directory}: a learned helper needs thresholds with a 'default'")
        thresholds = {str(k): _finite(v, f"thresholds.{k}", directory) for k, v in raw.items()}
    else:
        bins = _vector(spec.get("bins"), None, "bins", directory)
        if len(bins) < 2 or list(bins) != sorted(bins):
            raise ArtifactError(f"{directory}: bins must be at least two increasing edges")
        raw_actions = spec.get("actions")
        if not isinstance(raw_actions, list) or len(raw_actions) != len(bins) - 1:
            raise ArtifactError(
                f"{directory}: actions needs one row per score bin ({len(bins) - 1})"
            )
        rows = []
        for row in raw_actions:
            if not isinstance(row, list) or not row or any(a not in (0, 1) for a in row):
                raise ArtifactError(f"{directory}: each actions row is a non-empty list of 0/1")
            rows.append(tuple(int(a) for a in row))
        actions = tuple(rows)
    digest = hashlib.sha256(
        (directory / "helper.json").read_bytes() + (directory / weights_name).read_bytes()
    ).hexdigest()
    meta: dict[str, Any] = {k: spec[k] for k in ("training", "evaluation") if k in spec}
    return HelperArtifact(kind, digest, scorer, thresholds, bins, actions, meta)


def _hidden(
    spec: Any, n_features: int, embedding_dim: int, embedding_key: str, directory: Path
) -> HiddenUnits | None:
    """The optional ReLU units, each row joined over (features, embedding, budget)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ArtifactError(f"{directory}: hidden must be an object of per-unit weights")
    bias = _vector(spec.get("bias"), None, "hidden.bias", directory)
    units = len(bias)
    output = _vector(spec.get("output"), units, "hidden.output", directory)
    budget = _vector(spec.get("budget", [0.0] * units), units, "hidden.budget", directory)
    parts = []
    for key, width in (("features", n_features), (embedding_key, embedding_dim)):
        rows = spec.get(key) if width else [[]] * units  # no such input: nothing to read
        if not isinstance(rows, list) or len(rows) != units:
            raise ArtifactError(f"{directory}: hidden.{key} needs one row per unit ({units})")
        parts.append([_vector(row, width, f"hidden.{key}", directory) for row in rows])
    rows = [(*f, *e, b) for f, e, b in zip(*parts, budget, strict=True)]
    return hidden_units(rows, bias, output)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data


def _embedding(directory: Path, spec: Any) -> tuple[Embedder | None, str]:
    """The embedder an artifact asks for, and the weights key that goes with it."""
    if spec is None:
        return None, "embedding"
    if not isinstance(spec, dict) or spec.get("kind") not in ("hashed", "minilm"):
        raise ArtifactError(
            f"{directory}: embedding must be null or {{'kind': 'hashed' | 'minilm', ...}}"
        )
    params = {k: v for k, v in spec.items() if k not in ("kind", "fallback")}
    try:
        if spec["kind"] == "hashed":
            return HashedNgrams(**params), "embedding"
        from router.minilm import EmbedderUnavailable, MiniLm

        try:
            return MiniLm(**params), "embedding"
        except EmbedderUnavailable as exc:
            fallback = spec.get("fallback")
            if fallback is None:
                log.warning("%s: %s; the helper decides on its features alone", directory, exc)
                return None, "embedding"
            log.warning("%s: %s; the helper falls back to hashed n-grams", directory, exc)
            if not isinstance(fallback, dict) or fallback.get("kind") != "hashed":
                raise ArtifactError(f"{directory}: an embedding fallback must be hashed") from None
            rest = {k: v for k, v in fallback.items() if k != "kind"}
            return HashedNgrams(**rest), "fallback_embedding"
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{directory}: embedding: {exc}") from None


def _finite(value: Any, name: str, directory: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(f"{directory}: {name} must be a finite number, got {value!r}")
    return float(value)


def _vector(value: Any, length: int | None, name: str, directory: Path) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise ArtifactError(f"{directory}: {name} must be a list of numbers")
    if length is not None and len(value) != length:
        raise ArtifactError(f"{directory}: {name} has {len(value)} weights, expected {length}")
    return tuple(_finite(v, name, directory) for v in value)
