"""Text embeddings of the step state for helpers.

`hashed` is dependency-free: character n-grams of the state's text, each hashed (blake2b)
to a signed bucket of a fixed-size vector, then L2-normalised (the hashing trick of
Weinberger et al., 2009). It is what every helper can count on; a sentence-embedding model
can stand beside it where installed.

Text `labelled` (what `escalator train` writes now) reads `router.state.state_text` and
hashes each line's n-grams in its label's own namespace (as Vowpal Wabbit does), so "locked"
in the newest observation and "locked" in the task are different inputs to the helper.
Text `recent` is the plain rendering of the newest turns that earlier helpers were trained on.

With `pairs`, each pair of distinct words in the newest observation is hashed too, to one
of `pairs` more buckets (quadratic features, as Vowpal Wabbit's `-q`): what makes a step
hard is often a conjunction of facts the observation states apart ("in the kitchen" and
"carrying a glass vase"), which no linear score of single n-grams represents. On the quality
benchmark's three text worlds, 512 pair buckets lifted how well the agreement checks' learner
ranks the hidden hard steps from AUC 0.81 / 0.73 / 0.68 to 0.84 / 0.75 / 0.70 (text adventure,
grid, reasoning agent; one collection each, `bench/quality.py`'s worlds).

With `words`, each word of the newest observation and of the agent's latest action sets a
bucket of its own (1.0: present), the two lines in separate namespaces: a compact bag of
words a learner weighs one by one, where the n-gram buckets mix every line's trigrams and
the pair buckets light up by the hundred on a long observation. On the benchmark's text
adventure the checks' learner ranked the hidden hard steps at AUC 0.886 / 0.857 on features,
n-grams and words, against 0.847 / 0.828 on features, n-grams and pairs (2 collections); on
the reasoning agent, whose hard steps the n-grams show, the pairs did better (0.738 against
0.696), so the trainer tries both (training/stage_candidates.py).
"""

from __future__ import annotations

import hashlib
import math
import re
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
    pairs: int = 0  # buckets for pairs of words of the newest observation (text `labelled`)
    words: int = 0  # buckets for the words of the newest observation and action (`labelled`)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.ngram < 1 or self.turns < 1 or self.max_chars < 1:
            raise ValueError(f"hashed embedding sizes must be positive: {self}")
        if self.text not in TEXTS:
            raise ValueError(f"hashed embedding text must be one of {', '.join(TEXTS)}")
        for name, size in (("word pairs", self.pairs), ("words", self.words)):
            if size < 0 or (size and self.text != "labelled"):
                raise ValueError(f"{name} need a non-negative size and the labelled text")

    @property
    def width(self) -> int:
        """The vector's length: the n-gram buckets, the pair buckets, then the word buckets."""
        return self.dim + self.pairs + self.words

    def embed_messages(self, messages: Sequence[Message]) -> list[float]:
        return self.embed(render(messages, self.text, self.turns, self.max_chars))

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        n = self.ngram
        counts: Counter[str] = Counter()
        # The newest observation's and action's lines, lower-cased (labelled text).
        observation = action = ""
        if self.text == "labelled":
            for line in text.lower().splitlines():
                label, _, body = line.partition(": ")
                counts.update(f"{label}|{body[i : i + n]}" for i in range(len(body) - n + 1))
                if label == "observation":
                    observation = body
                elif label == "action":
                    action = body
        else:
            text = " ".join(text.lower().split())
            counts.update(text[i : i + n] for i in range(len(text) - n + 1))
        for gram, count in counts.items():
            digest = _gram_hash(gram)
            vector[(digest >> 1) % self.dim] += count if digest & 1 else -count
        norm = math.hypot(*vector)
        if norm:
            vector = [v / norm for v in vector]
        if self.pairs:
            vector += _word_pairs(observation, self.pairs)
        if self.words:
            vector += _words({"observation": observation, "action": action}, self.words)
        return vector


PAIR_WORDS = 48  # distinct words of the newest observation paired, at most (1,128 pairs)
_WORD = re.compile(r"[a-z0-9]+")
_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads one word's hash before the XOR


def _word_pairs(observation: str, size: int) -> list[float]:
    """1.0 in the bucket of each pair of distinct words of the (lower-cased) observation,
    its first PAIR_WORDS distinct words; unordered."""
    pairs = [0.0] * size
    words = dict.fromkeys(_WORD.findall(observation))  # distinct, in order of appearance
    hashes = sorted(_gram_hash(f"pair|{w}") for w in list(words)[:PAIR_WORDS])
    for i, first in enumerate(hashes):
        spread = first * _MIX
        for second in hashes[i + 1 :]:
            pairs[((spread ^ second) >> 17) % size] = 1.0
    return pairs


def _words(lines: dict[str, str], size: int) -> list[float]:
    """1.0 in the bucket of each word of each (lower-cased) line, per line's label."""
    present = [0.0] * size
    for label, line in lines.items():
        for word in set(_WORD.findall(line)):
            present[(_gram_hash(f"{label}|{word}") >> 1) % size] = 1.0
    return present


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
