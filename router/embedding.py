"""Text embeddings of the step state for helpers.

`hashed` is dependency-free: character n-grams of the latest turns, each hashed (blake2b)
to a signed bucket of a fixed-size vector, then L2-normalised (the hashing trick of
Weinberger et al., 2009). It is what every helper can count on; a sentence-embedding model
can stand beside it where installed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from router.state import Message, recent_text


@dataclass(frozen=True, slots=True)
class HashedNgrams:
    dim: int = 256
    ngram: int = 3
    turns: int = 4
    max_chars: int = 2_000

    def __post_init__(self) -> None:
        if self.dim < 1 or self.ngram < 1 or self.turns < 1 or self.max_chars < 1:
            raise ValueError(f"hashed embedding sizes must be positive: {self}")

    def embed_messages(self, messages: Sequence[Message]) -> list[float]:
        return self.embed(recent_text(messages, self.turns, self.max_chars))

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        text = " ".join(text.lower().split())
        counts: dict[str, int] = {}
        for i in range(max(len(text) - self.ngram + 1, 0)):
            gram = text[i : i + self.ngram]
            counts[gram] = counts.get(gram, 0) + 1
        for gram, count in counts.items():
            digest = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "big")
            sign = 1.0 if digest & 1 else -1.0
            vector[(digest >> 1) % self.dim] += sign * count
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector
