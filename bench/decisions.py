"""Decision latency per policy on 20-turn agent transcripts, and embedding throughput.

    python bench/decisions.py

Each policy decides 2,000 steps drawn from generated transcripts of a tool-using agent
(20 turns, some failed tool calls and repeated actions); the figure is the full decision as
the proxy makes it: features, the policy, budget feasibility and exploration. Targets: p99
<= 2 ms for the default helper, <= 15 ms with embeddings. The network rows are a helper with
32 ReLU units (what the agreement checks' learner exports when it beats the ridge). The
"text agent" rows decide on a ReAct text agent's transcripts instead (observations are user
messages of some 60 words, 40 distinct) with the trainer's own embedding: the labelled state
text, with and without the pairs of the newest observation's words.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.decision import BudgetView, finish_decision  # noqa: E402
from router.embedding import HashedNgrams  # noqa: E402
from router.policies import PolicyContext, build_policy  # noqa: E402
from router.state import FEATURE_NAMES, StepState, extract_features, recent_text  # noqa: E402


def transcript(rng: random.Random, turns: int = 20) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are an agent with a Python tool. " * 8},
        {"role": "user", "content": "Compute the total cost of the orders in orders.csv. " * 3},
    ]
    for i in range(turns):
        code = f"import pandas as pd\ndf = pd.read_csv('orders.csv')\nprint(df['cost'].sum() + {i})"
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "python", "arguments": json.dumps({"code": code})},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        failed = rng.random() < 0.3
        output = (
            "Traceback (most recent call last):\n  KeyError: 'cost'" if failed else "1234.5\n" * 20
        )
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": output})
    return messages


WORDS = [f"{a}{b}" for a in ("red", "old", "wet", "big", "odd") for b in "abcdefghijklm"]


def text_transcript(rng: random.Random, turns: int = 20) -> list[dict[str, Any]]:
    """A ReAct text agent's: each observation a user message of 60 words, 40 distinct."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You play a text adventure. Answer `ACTION: <command>`."},
        {"role": "user", "content": "Your task: put the red mug in the cupboard. " * 2},
    ]
    for _ in range(turns):
        action = f"Thought: next.\nACTION: take {rng.choice(WORDS)}"
        distinct = rng.sample(WORDS, 40)
        observation = " ".join(distinct + rng.choices(distinct, k=20))
        messages += [
            {"role": "assistant", "content": action},
            {"role": "user", "content": observation},
        ]
    return messages


def write_learned(
    directory: Path,
    dim: int | None,
    kind: str = "hashed",
    units: int = 0,
    pairs: int | None = None,
    words: int = 0,
) -> Path:
    """A helper with random weights; `pairs` (None: the older `recent` text) embeds the
    labelled text with that many word-pair buckets, and `words` word buckets."""
    directory.mkdir(parents=True, exist_ok=True)
    features = list(FEATURE_NAMES)
    embedding: dict[str, Any] | None = {"kind": kind, "dim": dim} if dim else None
    if embedding is not None and pairs is not None:
        embedding.update(text="labelled", pairs=pairs, words=words)
    width = (dim or 0) + (pairs or 0) + words
    # With words, the network reads them and not the pairs, as the trainer's words design.
    unread = range(dim or 0, (dim or 0) + (pairs or 0)) if words else range(0)
    rng = random.Random(0)
    (directory / "helper.json").write_text(
        json.dumps(
            {
                "format": 1,
                "kind": "learned",
                "features": features,
                "embedding": embedding,
                "weights": "weights.json",
                "thresholds": {"default": 0.5},
            }
        )
    )
    (directory / "weights.json").write_text(
        json.dumps(
            {
                "bias": -1.0,
                "features": [rng.gauss(0, 0.1) for _ in features],
                "embedding": [rng.gauss(0, 0.1) for _ in range(width)],
                "budget": 0.1,
                **(
                    {"hidden": hidden_units(rng, len(features), width, units, unread)}
                    if units
                    else {}
                ),
            }
        )
    )
    return directory


def hidden_units(
    rng: random.Random, n_features: int, dim: int, units: int, unread: range = range(0)
) -> dict[str, Any]:
    """A network helper's ReLU units (what the agreement checks' learner may export), at
    zero weight on the `unread` embedding columns."""
    return {
        "features": [[rng.gauss(0, 0.1) for _ in range(n_features)] for _ in range(units)],
        "embedding": [
            [0.0 if i in unread else rng.gauss(0, 0.1) for i in range(dim)] for _ in range(units)
        ],
        "budget": [0.0] * units,
        "bias": [rng.gauss(0, 0.1) for _ in range(units)],
        "output": [rng.gauss(0, 0.1) for _ in range(units)],
    }


def measure(policy_spec: dict[str, Any], steps: list[list[dict[str, Any]]]) -> tuple[float, float]:
    policy = build_policy(policy_spec, PolicyContext(route="agent", intervention="strong"))
    rng = random.Random(1)
    budget = BudgetView(limit=3, used=1, cheapest_cost=1)
    times = []
    for i, messages in enumerate(steps):
        started = time.perf_counter()
        features = extract_features(messages, i % 20)
        state = StepState("acme", "s", i % 20, "agent", messages, features)
        finish_decision(policy.decide(state, budget), budget, "strong", 0.0, rng)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def main() -> None:
    rng = random.Random(0)
    steps = [transcript(rng) for _ in range(2000)]
    work = Path(tempfile.mkdtemp())
    policies = {
        "never": {"kind": "never"},
        "random": {"kind": "random", "p": 0.2},
        "threshold (default)": {"kind": "threshold", "threshold": 0.5},
        "learned, features": {"kind": "learned", "artifact": str(write_learned(work / "f", None))},
        "learned, features+hashed-256": {
            "kind": "learned",
            "artifact": str(write_learned(work / "e", 256)),
        },
        "network-32, features": {
            "kind": "learned",
            "artifact": str(write_learned(work / "nf", None, units=32)),
        },
        "network-32, features+hashed-256": {
            "kind": "learned",
            "artifact": str(write_learned(work / "ne", 256, units=32)),
        },
    }
    try:
        from router.minilm import MiniLm

        minilm = MiniLm()
    except Exception as exc:  # the embed extra is optional
        minilm = None
        print(f"(MiniLM not measured: {exc})")
    else:
        policies["learned, features+MiniLM-40tok"] = {
            "kind": "learned",
            "artifact": str(write_learned(work / "m", 384, "minilm")),
        }
    print(f"{'policy':<44}{'p50 ms':>8}{'p99 ms':>8}")
    for name, spec in policies.items():
        p50, p99 = measure(spec, steps)
        print(f"{name:<44}{p50:8.3f}{p99:8.3f}")
    stories = [text_transcript(rng) for _ in range(2000)]
    for name, pairs, words, units in (
        ("text agent: learned, labelled hashed-256", 0, 0, 0),
        ("text agent: learned, + word pairs-512", 512, 0, 0),
        ("text agent: network-32, + word pairs-512", 512, 0, 32),
        ("text agent: learned, + pairs, words-512", 512, 512, 0),
        ("text agent: network-32, + pairs, words-512", 512, 512, 32),
    ):
        artifact = write_learned(
            work / f"t{pairs}-{words}-{units}", 256, units=units, pairs=pairs, words=words
        )
        p50, p99 = measure({"kind": "learned", "artifact": str(artifact)}, stories)
        print(f"{name:<44}{p50:8.3f}{p99:8.3f}")
    embed = HashedNgrams(dim=256)
    texts = [recent_text(m, embed.turns, embed.max_chars) for m in steps]
    started = time.perf_counter()
    for text in texts:
        embed.embed(text)
    elapsed = time.perf_counter() - started
    chars = sum(len(t) for t in texts)
    print(
        f"hashed-256 embedding: {len(texts) / elapsed:,.0f} texts/s "
        f"({chars / len(texts):,.0f} chars each), one core"
    )
    if minilm is not None:
        sample = texts[:200]
        started = time.perf_counter()
        for text in sample:
            minilm.embed(text)
        rate = len(sample) / (time.perf_counter() - started)
        print(f"MiniLM int8 embedding (up to 40 tokens): {rate:,.1f} texts/s, one core")


if __name__ == "__main__":
    main()
