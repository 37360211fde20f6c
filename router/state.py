"""Step state: what the helper knows about one agent step, and its cheap features.

Observations reach the proxy in whatever shape the agent sends them: `tool` messages (tool
calling), `user` messages (text agents, games, ReAct), or both. So nothing here keys on a
role. A step's transcript is read as turns: the task (the first user message), then
alternating agent actions (assistant messages) and observations (every non-assistant
message since the previous action). The newest observation is kept apart from the history:
it says most about the step at hand, and dumping every turn into one text dilutes it.

Features read the trajectory deliberately: whether the newest observation looks like a
failure, how long failures have gone on, whether the agent repeats an action or sees the same
observation again (stuck), and how far into the episode it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from router.openai_shapes import (
    call_function,
    choice_message,
    finish_reason,
    first_choice,
    message_text,
    token_logprobs,
    tool_calls,
)

Message = Mapping[str, Any]
Features = dict[str, float]

# Failures as tools and text environments word them: exceptions and HTTP-ish errors, and
# the refusals of games and simulators, as TextWorld, ALFWorld, ScienceWorld and the
# Infocom-style parsers word them ("You can't go that way.", "Nothing happens.", "That is
# locked.", "You have to open the fridge first.", "It is already open.", "That's not a
# verb I recognise.", "No known action matches that input.").
_ERROR_PATTERN = re.compile(
    r"\b(error|exception|traceback|failed|failure|invalid|not found|denied|timed? ?out"
    r"|nothing happens|can'?t|cannot|unable|no such|not possible|not allowed|unknown"
    r"|incorrect|wrong|try again|(?:do|did)n'?t (?:know|understand|see|work)"
    r"|(?:is|are|it'?s|that'?s) (?:locked|already)|(?:have|need) to [^.\n]{0,60}\bfirst"
    r"|not (?:a verb|something you|recogni[sz]ed|understood)|no known action"
    r"|(?:does|do|will)n'?t (?:seem|fit|budge|open|move))\b",
    re.IGNORECASE,
)
# Only the head of an observation is scanned: errors announce themselves early, and a
# bounded scan keeps the decision fast on long tool outputs.
_ERROR_SCAN_CHARS = 600
_SIGNATURE_CHARS = 500  # actions and observations are compared on their heads
# A ReAct turn acts in its `Action:` (and `Action Input:`) lines; its thoughts vary freely.
# Horizontal whitespace only: `\s*` at a line start would rescan runs of blank lines.
_REACT_ACTION = re.compile(r"^[ \t]*action(?: input)?[ \t]*:[^\n]*", re.IGNORECASE | re.MULTILINE)
_REACT_SCAN_CHARS = 2_000  # the action closes a ReAct turn: its tail is read
# Trajectory features read the newest messages only, so a step's cost is bounded however
# long the session: streaks and repeats older than this say little about the step at hand.
WINDOW_MESSAGES = 32


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


def _action_signature(message: Message) -> str:
    """What an assistant turn did: its tool calls if any, else its text."""
    calls = tool_calls(message)
    if calls:
        functions = [call_function(call) for call in calls]
        return ";".join(f"{fn.get('name', '')}({fn.get('arguments', '')})" for fn in functions)
    text = message_text(message)
    react = _REACT_ACTION.findall(text[-_REACT_SCAN_CHARS:])
    return "\n".join(line.strip() for line in react) if react else text.strip()


@dataclass(frozen=True, slots=True)
class Turns:
    """A transcript as the agent's loop: task, then (action, observation) pairs."""

    task: str
    actions: list[str]  # each assistant turn's signature, oldest first
    observations: list[str]  # the text that followed each action (and the first, before any)
    observation_roles: list[set[str]]


def split_turns(messages: Sequence[Message], window: int = WINDOW_MESSAGES) -> Turns:
    """The task (the first user message) and the turns among the newest `window` messages:
    every non-assistant message since an action is the observation that followed it
    (`observations[0]` is what came before the first action in the window)."""
    task = ""
    for message in messages:
        if message.get("role") == "user":
            task = message_text(message)
            break
    actions: list[str] = []
    observations: list[str] = [""]
    roles: list[set[str]] = [set()]
    for message in messages[-window:]:
        role = message.get("role")
        if role == "assistant":
            actions.append(_action_signature(message))
            observations.append("")
            roles.append(set())
            continue
        if role in ("system", "developer"):
            continue
        text = message_text(message)
        observations[-1] = f"{observations[-1]}\n{text}" if observations[-1] else text
        roles[-1].add(str(role))
    return Turns(task, actions, observations, roles)


def _looks_failed(text: str) -> bool:
    return _head_failed(text[:_ERROR_SCAN_CHARS])


# Every step resends the session's history: the same observations are judged again and again,
# so their verdicts are remembered (bounded; keyed by the scanned head).
@lru_cache(maxsize=8_192)
def _head_failed(head: str) -> bool:
    return bool(_ERROR_PATTERN.search(head))


@lru_cache(maxsize=8_192)
def _normalised_head(head: str) -> str:
    return " ".join(head.lower().split())


def _normalised(text: str) -> str:
    return _normalised_head(text[:_SIGNATURE_CHARS])


def extract_features(messages: Sequence[Message], step: int) -> Features:
    """Cheap features of a chat transcript at a given step; the text is read within the
    newest WINDOW_MESSAGES messages only, so the cost is bounded."""
    n_assistant = n_tool = 0
    for message in messages:
        role = message.get("role")
        n_assistant += role == "assistant"
        n_tool += role == "tool"
    turns = split_turns(messages)
    actions = turns.actions
    recent_tool = [m for m in messages[-WINDOW_MESSAGES:] if m.get("role") == "tool"]
    tool_failed = [_looks_failed(message_text(m)) for m in recent_tool]

    last = messages[-1] if messages else {}
    last_text = message_text(last)
    last_is_tool = last.get("role") in ("tool", "function")
    latest_action = actions[-1] if actions else ""
    repeats = actions[:-1].count(latest_action) if latest_action else 0

    # Observations that answered an action (the first block is what came before any).
    answered = turns.observations[1:]
    failed = [_looks_failed(o) for o in answered]
    seen_before: list[int] = []  # how often each observation was seen earlier
    counts: dict[str, int] = {}
    for observation in answered:
        key = _normalised(observation)
        seen_before.append(counts.get(key, 0) if key else 0)
        counts[key] = counts.get(key, 0) + 1
    newest = turns.observations[-1]
    error_streak = stuck_streak = 0
    for i in range(len(answered) - 1, -1, -1):
        if not failed[i]:
            break
        error_streak += 1
    for i in range(len(answered) - 1, -1, -1):
        if not (failed[i] or seen_before[i]):
            break
        stuck_streak += 1
    newest_roles = turns.observation_roles[-1]
    return {
        "step": float(step),
        "n_messages": float(len(messages)),
        "n_assistant": float(n_assistant),
        "n_tool": float(n_tool),
        "tool_error_rate": sum(tool_failed) / len(tool_failed) if tool_failed else 0.0,
        "last_is_observation": float(last_is_tool),
        "last_tool_error": float(last_is_tool and bool(tool_failed) and tool_failed[-1]),
        "last_observation_chars": float(len(last_text)),
        "repeated_actions": float(repeats),
        "obs_failed": float(bool(answered) and failed[-1]),
        "obs_failure_rate": sum(failed) / len(failed) if failed else 0.0,
        "failure_streak": float(error_streak),
        "stuck_streak": float(stuck_streak),
        "obs_repeated": float(seen_before[-1]) if seen_before else 0.0,
        "obs_from_user": float("user" in newest_roles),
        "obs_from_tool": float(bool(newest_roles & {"tool", "function"})),
        "obs_log_chars": math.log1p(len(newest)) if answered else 0.0,
        "action_log_chars": math.log1p(len(latest_action)),
        "log_step": math.log1p(step),
    }


def draft_features(completion: Mapping[str, Any]) -> Features:
    """What the base model's draft says about its own confidence: its token logprobs, whether
    its tool calls parse, whether it ran out of tokens."""
    choice = first_choice(completion)
    message = choice_message(choice)
    logprobs = token_logprobs(choice)
    values = [t["logprob"] for t in logprobs if isinstance(t.get("logprob"), int | float)]
    mean = sum(values) / len(values) if values else 0.0
    calls = tool_calls(message)
    invalid = 0
    for call in calls:
        try:
            json.loads(call_function(call).get("arguments") or "")
        except (TypeError, ValueError):
            invalid += 1
    return {
        "draft_chars": float(len(message_text(message))),
        "draft_tool_calls": float(len(calls)),
        "draft_invalid_tool_args": float(invalid > 0),
        "draft_uncertainty": -mean,
        "draft_min_logprob": min(values) if values else 0.0,
        "draft_truncated": float(finish_reason(choice) == "length"),
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
    "obs_failed",
    "obs_failure_rate",
    "failure_streak",
    "stuck_streak",
    "obs_repeated",
    "obs_from_user",
    "obs_from_tool",
    "obs_log_chars",
    "action_log_chars",
    "log_step",
)  # every feature a helper may be trained on


def recent_text(messages: Sequence[Message], turns: int = 4, max_chars: int = 2_000) -> str:
    """The latest turns as one string, newest last, for text models of the state; an
    assistant turn is its tool calls when it made any. (The rendering of helpers trained
    before `state_text`; kept so their weights keep their meaning.)"""
    lines = [
        f"{m.get('role', '?')}: "
        + (_action_signature(m) if m.get("role") == "assistant" else message_text(m))
        for m in messages[-turns:]
    ]
    return "\n".join(lines)[-max_chars:]


TEXT_LABELS = ("TASK", "EARLIER", "ACTION", "OBSERVATION")


def state_text(messages: Sequence[Message], max_chars: int = 2_000) -> str:
    """The state as labelled lines, newest last: the task, the previous observation, the
    agent's latest action, then the newest observation, each cut to its own share of
    `max_chars` so a long history never crowds out the observation at hand. Whatever role
    carried an observation, it renders the same."""
    turns = split_turns(messages)
    # Before any action the whole block is the newest observation: where it is more than the
    # task (an agent that sends its history in user messages), its tail is shown as such.
    newest = turns.observations[-1] if turns.observations[-1] != turns.task else ""
    earlier = turns.observations[-2] if len(turns.observations) > 1 else ""
    action = turns.actions[-1] if turns.actions else ""
    share = max_chars // 8
    fields = (
        ("TASK", turns.task[: share * 2]),
        ("EARLIER", earlier[-share:] if earlier != turns.task else ""),
        ("ACTION", action[-share:]),
        ("OBSERVATION", newest[-share * 4 :]),
    )
    return "\n".join(f"{label}: {' '.join(text.split())}" for label, text in fields if text)
