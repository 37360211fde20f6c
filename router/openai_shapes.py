"""Reading OpenAI's chat shapes: a completion's choices and their messages, a message's text
and tool calls, a finish reason, token logprobs and usage, and a stream chunk's delta.

Upstreams and agents send these loosely (a field missing or null, content as a list of
parts), so every reader here answers an empty value rather than raising: a malformed answer
reads as an empty one. Nothing is copied: a reader hands back the part it found (a list of
them without the items that are not objects), or a shared empty one. An object is a `dict`,
as a JSON parser gives it: checking for any `Mapping` costs eight times as much, on every
event of every relayed stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

Json = Mapping[str, Any]
TokenKind = Literal["prompt", "completion", "total"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("prompt", "completion", "total")

_EMPTY: Json = MappingProxyType({})
_TOKEN_KEYS = {kind: f"{kind}_tokens" for kind in TOKEN_KINDS}


def choices_of(completion: Json) -> list[Json]:
    """Every choice of a completion (or of a stream chunk) that is an object."""
    found = completion.get("choices")
    if not isinstance(found, list):
        return []
    return [choice for choice in found if isinstance(choice, dict)]


def first_choice(completion: Json) -> Json:
    """A completion's (or a stream chunk's) first choice, empty where there is none."""
    found = completion.get("choices")
    first = found[0] if isinstance(found, list) and found else None
    return first if isinstance(first, dict) else _EMPTY


def choice_message(choice: Json) -> Json:
    """The assistant message of a completion's choice."""
    message = choice.get("message")
    return message if isinstance(message, dict) else _EMPTY


def first_message(completion: Json) -> Json:
    """The message of a completion's first choice: the answer a step gets."""
    return choice_message(first_choice(completion))


def message_text(message: Json) -> str:
    """The text of a message, whatever shape its content has (text parts only)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            text
            for part in content
            if isinstance(part, dict) and isinstance(text := part.get("text"), str)
        )
    return ""


def tool_calls(message: Json) -> Sequence[Json]:
    """The tool calls of a message (or of a stream chunk's delta) that are objects."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return ()  # most messages and deltas: nothing built
    return [call for call in calls if isinstance(call, dict)]


def call_function(call: Json) -> Json:
    """The `function` of a tool call: its `name` and its `arguments` (a JSON string)."""
    function = call.get("function")
    return function if isinstance(function, dict) else _EMPTY


def finish_reason(choice: Json) -> str | None:
    """Why a choice ended (`stop`, `length`, `tool_calls`, ...); None while it has not."""
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) else None


def token_logprobs(choice: Json) -> list[Json]:
    """The logprobs of a choice's answer tokens, one object per token, where asked for."""
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list):
        return []
    return [token for token in tokens if isinstance(token, dict)]


def usage_of(data: Json) -> Json | None:
    """A completion's (or a stream chunk's) token usage; None where it reports none."""
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else None


def usage_tokens(usage: Json, kind: TokenKind) -> int | None:
    """The tokens of one kind a usage counts; None where it does not say."""
    value = usage.get(_TOKEN_KEYS[kind])
    return value if isinstance(value, int) else None


def choice_delta(choice: Json) -> Json:
    """What a stream chunk's choice adds to the answer."""
    delta = choice.get("delta")
    return delta if isinstance(delta, dict) else _EMPTY


def delta_text(delta: Json, field: Literal["content", "reasoning_content"] = "content") -> str:
    """The text a delta adds: the answer's (`content`) or its thinking's."""
    text = delta.get(field)
    return text if isinstance(text, str) else ""
