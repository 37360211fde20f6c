"""Choosing one answer among samples (best-of-N): majority vote over comparable answers.

Two answers are the same when their *answer keys* match: for a tool call, the function name
and its arguments as canonical JSON; for text, the final answer it states (a `\\boxed{}`
value, the value after "answer is" / "answer:", or else the last number), and failing all
of those the whole text with case, spacing and punctuation normalised. The most common key
wins; ties go to the earliest sample, so a vote among distinct answers picks sample 0.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.openai_shapes import call_function, tool_calls

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_STATED = re.compile(r"answer\s*(?:is|:|=)\s*[:\s]*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_NOISE = re.compile(r"[^\w\s.-]|(?<!\d)\.|\.(?!\d)")


@dataclass(frozen=True, slots=True)
class Vote:
    chosen: int  # index of the winning sample
    votes: int  # samples that agree with it
    samples: int


def answer_key(message: Mapping[str, Any]) -> str:
    """What a sampled assistant message answers, in a form that compares across samples."""
    if calls := tool_calls(message):
        return "tools:" + ";".join(_call_key(call) for call in calls)
    text = message.get("content")
    if not isinstance(text, str):
        return ""
    return "text:" + _final_answer(text)


def majority_vote(messages: Sequence[Mapping[str, Any]]) -> Vote:
    if not messages:
        raise ValueError("majority vote over no samples")
    keys = [answer_key(m) for m in messages]
    counts = Counter(keys)
    best = max(counts.values())
    chosen = next(i for i, key in enumerate(keys) if counts[key] == best)
    return Vote(chosen=chosen, votes=best, samples=len(messages))


def _call_key(call: Mapping[str, Any]) -> str:
    function = call_function(call)
    name, raw = function.get("name", ""), function.get("arguments", "")
    try:
        args = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        args = str(raw).strip()
    return f"{name}({args})"


def _final_answer(text: str) -> str:
    boxed = _BOXED.findall(text)
    if boxed:
        return _normalise(boxed[-1])
    stated = _STATED.findall(text)
    if stated:
        return _normalise(stated[-1])
    numbers: list[str] = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return _normalise(text)


def _normalise(text: str) -> str:
    numbers: list[str] = _NUMBER.findall(text)
    if len(numbers) == 1:
        return numbers[0].replace(",", "")
    return " ".join(_NOISE.sub(" ", text.lower()).split())
