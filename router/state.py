"""Step state: what the helper knows about one agent step, and its cheap features.

Features read the trajectory deliberately rather than the whole history: the latest
observation (its length, whether it looks like a failed tool call), whether the agent is
repeating itself, and how far into the episode it is. Dumping every turn dilutes the
signal; ignoring the trajectory routes follow-up turns wrongly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = Mapping[str, Any]
Features = dict[str, float]

_ERROR_PATTERN = re.compile(
    r"\b(error|exception|traceback|failed|failure|invalid|not found|denied|timed? ?out)\b",
    re.IGNORECASE,
)
# Only the head of an observation is scanned: errors announce themselves early, and a
# bounded scan keeps the decision fast on long tool outputs.
_ERROR_SCAN_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class StepState:
    """One agent step as the helper sees it."""

    tenant: str
    session: str
    step: int
    route: str
    messages: Sequence[Message]
    features: Features = field(default_factory=dict)
    # With decision timing `after_draft`: the base model's answer (a chat completion) that
    # the helper judges before it is served or discarded.
    draft: Mapping[str, Any] | None = None


def message_text(message: Message) -> str:
    """The text of a message, whatever shape its content has."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return ""


def _action_signature(message: Message) -> str:
    """What an assistant turn did: its tool calls if any, else its text."""
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        parts = []
        for call in calls:
            fn = call.get("function", {}) if isinstance(call, Mapping) else {}
            if isinstance(fn, Mapping):
                parts.append(f"{fn.get('name', '')}({fn.get('arguments', '')})")
        return ";".join(parts)
    return message_text(message).strip()


def extract_features(messages: Sequence[Message], step: int) -> Features:
    """Cheap, bounded-cost features of a chat transcript at a given step."""
    n_assistant = n_tool = n_tool_errors = 0
    signatures: list[str] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            n_assistant += 1
            signatures.append(_action_signature(message))
        elif role == "tool":
            n_tool += 1
            if _ERROR_PATTERN.search(message_text(message)[:_ERROR_SCAN_CHARS]):
                n_tool_errors += 1

    last = messages[-1] if messages else {}
    last_text = message_text(last)
    last_role = last.get("role")
    last_is_observation = last_role in ("tool", "function")
    last_error = bool(last_is_observation and _ERROR_PATTERN.search(last_text[:_ERROR_SCAN_CHARS]))
    latest_action = signatures[-1] if signatures else ""
    repeats = signatures[:-1].count(latest_action) if latest_action else 0

    return {
        "step": float(step),
        "n_messages": float(len(messages)),
        "n_assistant": float(n_assistant),
        "n_tool": float(n_tool),
        "tool_error_rate": n_tool_errors / n_tool if n_tool else 0.0,
        "last_is_observation": float(last_is_observation),
        "last_tool_error": float(last_error),
        "last_observation_chars": float(len(last_text)),
        "repeated_actions": float(repeats),
    }


def draft_features(completion: Mapping[str, Any]) -> Features:
    """What the base model's draft says about its own confidence: its token logprobs, whether
    its tool calls parse, whether it ran out of tokens."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    logprobs = (choice.get("logprobs") or {}).get("content") or []
    values = [t["logprob"] for t in logprobs if isinstance(t.get("logprob"), int | float)]
    mean = sum(values) / len(values) if values else 0.0
    calls = message.get("tool_calls") or []
    invalid = 0
    for call in calls:
        try:
            json.loads((call.get("function") or {}).get("arguments") or "")
        except (TypeError, ValueError):
            invalid += 1
    return {
        "draft_chars": float(len(message_text(message))),
        "draft_tool_calls": float(len(calls)),
        "draft_invalid_tool_args": float(invalid > 0),
        "draft_uncertainty": -mean,
        "draft_min_logprob": min(values) if values else 0.0,
        "draft_truncated": float(choice.get("finish_reason") == "length"),
    }


FEATURE_NAMES = (
    "step",
    "n_messages",
    "n_assistant",
    "n_tool",
    "tool_error_rate",
    "last_is_observation",
    "last_tool_error",
    "last_observation_chars",
    "repeated_actions",
    "prior_escalations",
    "draft_chars",
    "draft_tool_calls",
    "draft_invalid_tool_args",
    "draft_uncertainty",
    "draft_min_logprob",
    "draft_truncated",
)  # every feature a helper may be trained on


def recent_text(messages: Sequence[Message], turns: int = 4, max_chars: int = 2_000) -> str:
    """The latest turns as one string, newest last, for text models of the state; an
    assistant turn is its tool calls when it made any."""
    lines = [
        f"{m.get('role', '?')}: "
        + (_action_signature(m) if m.get("role") == "assistant" else message_text(m))
        for m in messages[-turns:]
    ]
    return "\n".join(lines)[-max_chars:]
