"""Text embeddings of the step state for helpers.

`hashed` is dependency-free: character n-grams of the state's text, each hashed (blake2b)
to a signed bucket of a fixed-size vector, then L2-normalised (the hashing trick of
Weinberger et al., 2009). It is what every helper can count on; a sentence-embedding model
can stand beside it where installed.

Text `labelled` (what `escalator train` writes now) reads `router.state.state_text` and
hashes each line's n-grams in its label's own namespace (as Vowpal Wabbit does), so "locked"
in the newest observation and "locked" in the task are different inputs to the helper.
Text `recent` is the plain rendering of the newest turns that earlier helpers were trained on.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from router.state import Message, recent_text, state_text

TEXTS = ("recent", "labelled")


@dataclass(frozen=True, slots=True)
class HashedNgrams:
    dim: int = 256
    ngram: int = 3
    turns: int = 4
    max_chars: int = 2_000
    text: str = "recent"

    def __post_init__(self) -> None:
        if self.dim < 1 or self.ngram < 1 or self.turns < 1 or self.max_chars < 1:
            raise ValueError(f"hashed embedding sizes must be positive: {self}")
        if self.text not in TEXTS:
            raise ValueError(f"hashed embedding text must be one of {', '.join(TEXTS)}")

    def embed_messages(self, messages: Sequence[Message]) -> list[float]:
        return self.embed(render(messages, self.text, self.turns, self.max_chars))

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        n = self.ngram
        counts: Counter[str] = Counter()
        if self.text == "labelled":
            for line in text.lower().splitlines():
                label, _, body = line.partition(": ")
                counts.update(f"{label}|{body[i : i + n]}" for i in range(len(body) - n + 1))
        else:
            text = " ".join(text.lower().split())
            counts.update(text[i : i + n] for i in range(len(text) - n + 1))
        for gram, count in counts.items():
            digest = _gram_hash(gram)
            vector[(digest >> 1) % self.dim] += count if digest & 1 else -count
        norm = math.hypot(*vector)
        return [v / norm for v in vector] if norm else vector


def render(messages: Sequence[Message], text: str, turns: int, max_chars: int) -> str:
    """The text an embedding reads of a transcript: `labelled` or `recent`."""
    if text == "labelled":
        return state_text(messages, max_chars)
    return recent_text(messages, turns, max_chars)


# N-grams repeat across turns and steps; hashing each distinct one once keeps embedding fast
# on the hot path and lets training embed a million steps in a minute or two.
@lru_cache(maxsize=1 << 17)
def _gram_hash(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "big")
