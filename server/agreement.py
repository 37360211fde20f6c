"""Agreement checks: on an escalated step, would the base model have answered the same?

Where a step was escalated, the proxy also asks the base model for its answer to the same
request, after the intervention's answer has been sent (off the request path: the agent
waits for nothing), and logs whether the two agree as a `kind: agreement` record. The trainer
learns from these where the base model's answers differ from the intervention's: a label on
every escalated state, far less noisy than an episode's outcome, which is what decides where
intervening can change anything. A route turns the checks off with `agreement_checks = false`.

Two answers agree when they do the same thing:
- tool calls: the same functions with the same arguments (as parsed JSON), in order;
- text: the same text, or the same last line (where ReAct agents put their action and
  reasoning agents their result), compared without case, outer punctuation or runs of
  whitespace.
An answer with tool calls never agrees with one without. Free-form answers that differ in
wording count as disagreeing: the trainer sees such a label never varies and leaves it out.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from router.openai_shapes import Json, call_function, message_text, tool_calls
from server.trace import SCHEMA_VERSION

_SPACE = re.compile(r"\s+")
_EDGE = " \t.,;:!?\"'`*"


def agreement(delivered: Json | None, base: Json | None) -> float:
    """1.0 when the other model's answer (`base`) does what the delivered one did, else 0.0.
    Each is a chat message (or the step record's `response`: `content` and `tool_calls`)."""
    delivered, base = delivered or {}, base or {}
    calls, base_calls = _calls(delivered), _calls(base)
    if calls or base_calls:
        return float(calls == base_calls)
    text, base_text = _text(delivered), _text(base)
    if text == base_text:
        return 1.0
    return float(bool(text) and _last_line(text) == _last_line(base_text))


def agreement_record(
    tenant: str,
    session: str,
    step: int,
    request_id: str,
    value: float,
    asked: str,
    call: dict[str, Any],
    config_hash: str,
) -> dict[str, Any]:
    """The log record of one check; `call` is the asked model's call (the trace's record),
    kept under its name (`base` or `intervention`)."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "agreement",
        "ts": round(time.time(), 3),
        "tenant": tenant,
        "session": session,
        "step": step,
        "request_id": request_id,
        "agreement": value,
        "asked": asked,
        asked: call,
        "config_hash": config_hash,
    }


def _calls(message: Json) -> list[tuple[str, Any]]:
    out = []
    for call in tool_calls(message):
        function = call_function(call)
        if not function:
            continue
        arguments = function.get("arguments")
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            parsed = arguments
        out.append((str(function.get("name")), parsed))
    return out


def _text(message: Json) -> str:
    content = message_text(message)
    lines = (_SPACE.sub(" ", line).strip(_EDGE).lower() for line in content.splitlines())
    return "\n".join(line for line in lines if line)


def _last_line(text: str) -> str:
    return text.rsplit("\n", 1)[-1]
