"""Text embeddings of the step state for helpers.

`hashed` is dependency-free: character n-grams of the latest turns, each hashed (blake2b)
to a signed bucket of a fixed-size vector, then L2-normalised (the hashing trick of
Weinberger et al., 2009). It is what every helper can count on; a sentence-embedding model
can stand beside it where installed.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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
        n = self.ngram
        counts = Counter(text[i : i + n] for i in range(len(text) - n + 1))
        for gram, count in counts.items():
            digest = _gram_hash(gram)
            vector[(digest >> 1) % self.dim] += count if digest & 1 else -count
        norm = math.hypot(*vector)
        return [v / norm for v in vector] if norm else vector


# N-grams repeat across turns and steps; hashing each distinct one once keeps embedding fast
# on the hot path and lets training embed a million steps in a minute or two.
@lru_cache(maxsize=1 << 17)
def _gram_hash(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "big")
