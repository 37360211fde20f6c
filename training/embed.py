"""The state matrix the PRM and the helper learn from: features, then a text embedding.

The embedding is computed exactly as the proxy computes it at decision time (the same
`router` embedder over the same newest turns), so weights trained here mean the same thing
there. Hashed n-grams are embedded on every core; texts repeat across a session's steps
less than one would hope, so this is the slowest stage on large logs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.embedding import HashedNgrams
from router.minilm import DIM as MINILM_DIM
from router.state import FEATURE_NAMES

# The newest observation is the state text's last line; 96 tokens keep it and the action
# before it on game-like observations (left truncation drops the task first).
MINILM_TOKENS = 96


@dataclass(frozen=True)
class EmbeddingSpec:
    """What goes into helper.json's "embedding" (None: features only)."""

    kind: str  # "none" | "hashed" | "minilm"
    dim: int = 256  # hashed: n-gram buckets
    pairs: int = 512  # hashed: buckets of word pairs of the newest observation
    words: int = 512  # hashed: buckets of the newest observation's and action's words

    @property
    def width(self) -> int:
        """The embedding's columns in the design matrix."""
        if self.kind == "hashed":
            return self.hashed().width
        return MINILM_DIM if self.kind == "minilm" else 0

    def hashed(self) -> HashedNgrams:
        return HashedNgrams(dim=self.dim, text="labelled", pairs=self.pairs, words=self.words)

    @property
    def word_width(self) -> int:
        """The word buckets' columns: the embedding's last (none but hashed)."""
        return self.words if self.kind == "hashed" else 0

    def word_design(self, n_features: int) -> np.ndarray | None:
        """The state matrix's columns the checks' learner may read instead of the pairs: the
        features, the n-gram buckets and the word buckets (None without words)."""
        if not self.word_width:
            return None
        ngrams = np.arange(n_features + self.dim)
        return np.concatenate([ngrams, n_features + self.dim + self.pairs + np.arange(self.words)])

    def artifact_entry(self) -> dict[str, Any] | None:
        if self.kind == "none":
            return None
        if self.kind == "hashed":
            entry = {"kind": "hashed", "dim": self.dim, "text": "labelled", "pairs": self.pairs}
            return entry | ({"words": self.words} if self.words else {})
        return {
            "kind": "minilm",
            "max_tokens": MINILM_TOKENS,
            "text": "labelled",
        }


def feature_columns(features: np.ndarray, exclude: Sequence[str] = ()) -> list[int]:
    """The feature columns a model trains on: those that vary, minus any excluded."""
    spread = features.max(axis=0) - features.min(axis=0) if len(features) else np.zeros(0)
    return [i for i, name in enumerate(FEATURE_NAMES) if spread[i] > 0 and name not in set(exclude)]


def embed_texts(
    texts: Sequence[str],
    spec: EmbeddingSpec,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One row per text (float32), written into `out` when given; empty for `none`."""
    if spec.kind == "none":
        return np.zeros((len(texts), 0), dtype=np.float32)
    if spec.kind == "minilm":
        vectors = _minilm(texts, progress)
        if out is None:
            return vectors
        out[:] = vectors
        return out
    chunk = 20_000
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    if out is None:
        out = np.zeros((len(texts), spec.width), dtype=np.float32)
    workers = workers or min(os.cpu_count() or 1, 4)
    row = 0
    if workers == 1 or len(chunks) == 1:
        results: Any = (_hashed(list(c), spec) for c in chunks)
        for block in results:
            out[row : row + len(block)] = block
            row += len(block)
            if progress:
                progress(len(block))
        return out
    with ProcessPoolExecutor(workers) as pool:
        for block in pool.map(_hashed, [list(c) for c in chunks], [spec] * len(chunks)):
            out[row : row + len(block)] = block
            row += len(block)
            if progress:
                progress(len(block))
    return out


def _hashed(texts: list[str], spec: EmbeddingSpec) -> np.ndarray:
    embedder = spec.hashed()
    rows = [embedder.embed(t) for t in texts]
    return np.array(rows, dtype=np.float32).reshape(-1, embedder.width)


def _minilm(texts: Sequence[str], progress: Callable[[int], None] | None) -> np.ndarray:
    from router.minilm import MiniLm

    model = MiniLm(max_tokens=MINILM_TOKENS, text="labelled")
    rows = []
    for text in texts:
        rows.append(model.embed(text))
        if progress:
            progress(1)
    return np.array(rows, dtype=np.float32).reshape(len(texts), model.dim)
