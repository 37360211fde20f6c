"""OpenAI tool calls from a local model's text.

llama-cpp-python's server renders a GGUF's own chat template, which for Qwen2.5 lists the
request's tools and asks the model to answer `<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`; but it sends back whatever the model wrote as `content`, tags and all (and the
small models often write the bare JSON object without the tags). `with_tool_calls` wraps the
server's chat handler so the answer carries real `tool_calls` instead, non-streamed and
streamed (`delta.tool_calls` with an index), and follows `tool_choice`:

- absent or `"auto"`: the model chooses; text that holds calls to declared tools becomes
  `tool_calls` (any prose before the first call stays `content`), anything else is content;
- `"none"`: the tools are not shown to the model and nothing is read as a call;
- `"required"` or a named function: sampling is constrained by a grammar to one
  `{"name", "arguments"}` object for an allowed tool, whose arguments follow its schema.

Text that looks like a call but does not parse, or names an undeclared tool, stays content:
the model's answer is never turned into an error. Pure Python on OpenAI-shaped dicts, so the
proxy's tests run it without llama.cpp; `server/local/llama_chat.py` plugs it into the server.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FENCE = "```"

# The server's own chat handler: keyword arguments of a chat request in, a chat completion
# (a dict) or its chunks (an iterator of dicts, when `stream` is true) out.
ChatHandler = Callable[..., Any]
# A grammar for llama.cpp's sampler from a JSON schema (LlamaGrammar.from_json_schema).
GrammarFactory = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class ToolChoice:
    """What a request's `tools` and `tool_choice` allow: the tools' names and schemas, and
    whether the answer must be a call (`forced`, to one of `allowed`)."""

    tools: dict[str, dict[str, Any]]  # name -> JSON schema of its arguments
    allowed: tuple[str, ...]
    forced: bool

    @classmethod
    def read(cls, tools: Any, tool_choice: Any) -> ToolChoice | None:
        """None where nothing may be called: no function tools, or `tool_choice: "none"`."""
        declared: dict[str, dict[str, Any]] = {}
        for tool in tools or ():
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                parameters = function.get("parameters")
                declared[function["name"]] = (
                    dict(parameters) if isinstance(parameters, Mapping) else {"type": "object"}
                )
        if not declared or tool_choice == "none":
            return None
        if tool_choice == "required":
            return cls(declared, tuple(declared), forced=True)
        if isinstance(tool_choice, Mapping):
            function = tool_choice.get("function")
            name = function.get("name") if isinstance(function, Mapping) else None
            if name in declared:
                return cls(declared, (name,), forced=True)
        return cls(declared, tuple(declared), forced=False)

    def call_schema(self) -> dict[str, Any]:
        """The JSON schema a forced answer follows: one call to an allowed tool."""
        options = [
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": self.tools[name]},
                "required": ["name", "arguments"],
            }
            for name in self.allowed
        ]
        return options[0] if len(options) == 1 else {"anyOf": options}


def read_tool_calls(text: str, allowed: tuple[str, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """The text's tool calls in OpenAI's shape, and the prose around them (None if there is
    none; in OpenAI's message the calls come after it, whatever the order in the text). No
    calls where the text holds none, or any candidate is malformed or names a tool not in
    `allowed`: then the whole text is the content."""
    as_content: tuple[str | None, list[dict[str, Any]]] = (text, [])
    if OPEN in text:
        prose, *blocks = text.split(OPEN)
        calls, texts = [], [prose.strip()]
        for block in blocks:
            body, _, after = block.partition(CLOSE)  # the last may be left open
            call = _call(body, allowed)
            if call is None:
                return as_content
            calls.append(call)
            texts.append(after.strip())
        return "\n".join(t for t in texts if t) or None, calls
    objects = _json_objects(_unfenced(text.strip()))
    if not objects:
        return as_content
    found = [_call_from(obj, allowed) for obj in objects]
    if None in found:
        return as_content
    return None, [call for call in found if call is not None]


def _call(body: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
    objects = _json_objects(_unfenced(body.strip()))
    return _call_from(objects[0], allowed) if len(objects) == 1 else None


def _call_from(obj: Any, allowed: tuple[str, ...]) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or obj.get("name") not in allowed:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # already a JSON string, as some models write it
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": obj["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _unfenced(text: str) -> str:
    """The inside of one Markdown code block (```json ... ```) that is the whole text."""
    if text.startswith(_FENCE) and text.endswith(_FENCE) and len(text) > 2 * len(_FENCE):
        inner = text[len(_FENCE) : -len(_FENCE)]
        first_line, newline, body = inner.partition("\n")
        return (body if newline and first_line.strip().isalpha() else inner).strip()
    return text


def _json_objects(text: str) -> list[Any]:
    """The JSON values the text consists of (a list spreads into its items), or [] if it is
    anything else."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        if text[at] not in "{[":
            return []
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return []
        values.extend(value if isinstance(value, list) else [value])
    return values


# -- the chat handler -----------------------------------------------------------------------


def with_tool_calls(chat: ChatHandler, grammar_for: GrammarFactory) -> ChatHandler:
    """`chat` answering with OpenAI tool calls; requests without tools pass through as they
    are."""

    def chat_with_tool_calls(
        *, messages: list[Any], tools: Any = None, tool_choice: Any = None, **kwargs: Any
    ) -> Any:
        choice = ToolChoice.read(tools, tool_choice)
        if choice is None:
            return chat(messages=template_messages(messages), **kwargs)
        if choice.forced:
            kwargs["grammar"] = grammar_for(choice.call_schema())
        answer = chat(messages=template_messages(messages), tools=tools, **kwargs)
        if kwargs.get("stream"):
            return stream_tool_calls(answer, choice.allowed)
        return answer_tool_calls(answer, choice.allowed)

    return chat_with_tool_calls


def template_messages(messages: list[Any]) -> list[Any]:
    """The messages as a chat template expects them: an earlier call's `arguments` as an
    object, not OpenAI's JSON string (Qwen's template writes them with `tojson`, so a
    string would show the model its own calls double-encoded)."""
    if not any(isinstance(m, Mapping) and m.get("tool_calls") for m in messages):
        return messages
    return [_with_argument_objects(m) if isinstance(m, Mapping) else m for m in messages]


def _with_argument_objects(message: Mapping[str, Any]) -> Mapping[str, Any]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return message
    decoded = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        if function is not None and isinstance(arguments, str):
            with contextlib.suppress(ValueError):
                call = {**call, "function": {**function, "arguments": json.loads(arguments)}}
        decoded.append(call)
    return {**message, "tool_calls": decoded}


def answer_tool_calls(answer: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """A non-streamed chat completion with the calls in its text made `tool_calls`."""
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        text = message.get("content")
        if not isinstance(text, str):
            continue
        content, calls = read_tool_calls(text, allowed)
        if calls:
            message["content"] = content
            message["tool_calls"] = calls
            choice["finish_reason"] = "tool_calls"
    return answer


def stream_tool_calls(
    chunks: Iterator[dict[str, Any]], allowed: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """Streamed chunks with calls made `delta.tool_calls` (see `_HeldCalls` for what is held
    back); the finish reason becomes `tool_calls` where there are calls."""
    held = _HeldCalls(allowed)
    last: dict[str, Any] | None = None
    for chunk in chunks:
        choices = chunk.get("choices") or []
        if len(choices) != 1:  # a usage-only chunk, or several choices: not ours to read
            yield chunk
            continue
        last, choice = chunk, choices[0]
        delta = dict(choice.get("delta") or {})
        text = delta.pop("content", None)
        finished = choice.get("finish_reason") is not None
        if isinstance(text, str):
            ready = held.feed(text)
            if ready:
                yield _with_delta(chunk, {**delta, "content": ready}, finish_reason=None)
                delta = {}
            elif not delta and not finished:
                continue  # all of it held back
        if not finished:
            if delta:
                yield _with_delta(chunk, delta)
            continue
        content, calls = held.finish()
        if content:
            yield _with_delta(chunk, {"content": content}, finish_reason=None)
        if calls:
            tool_calls = [{"index": i, **call} for i, call in enumerate(calls)]
            yield _with_delta(chunk, {"tool_calls": tool_calls}, finish_reason=None)
        yield _with_delta(chunk, delta, finish_reason="tool_calls" if calls else _UNSET)
        last = None
    content, _ = held.finish()
    if content and last is not None:  # the stream ended without a finish reason
        yield _with_delta(last, {"content": content}, finish_reason=None)


class _HeldCalls:
    """The streamed text, sent on as it comes while it is prose; held from where a call may
    begin (`<tool_call>` anywhere, or `{`, `[` or a code fence opening the answer) until the
    model finishes, then read as calls or, if it holds none, sent as the text it was."""

    _OPENERS = ("{", "[", _FENCE)

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        self.text = ""  # not yet sent
        self.in_call = False
        self.sent_prose = False

    def feed(self, text: str) -> str:
        """`text` arrived; the part that can be sent now."""
        self.text += text
        if self.in_call:
            return ""
        opening = self.text.lstrip()
        if not self.sent_prose:
            if opening.startswith(self._OPENERS):
                self.in_call = True
                return ""
            if any(o.startswith(opening) for o in (*self._OPENERS, OPEN)):
                return ""  # too little yet to tell (whitespace, or the start of an opener)
        start = self.text.find(OPEN)
        if start >= 0:
            self.in_call = True
            ready, self.text = self.text[:start], self.text[start:]
        else:
            cut = len(self.text) - _partial_open(self.text)
            ready, self.text = self.text[:cut], self.text[cut:]
        self.sent_prose = self.sent_prose or bool(ready)
        return ready

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """What is left to send: text, and calls."""
        text, self.text = self.text, ""
        if self.in_call:
            content, calls = read_tool_calls(text, self.allowed)
            if calls:
                return content or "", calls
        return text, []


_UNSET: Any = object()


def _with_delta(
    chunk: dict[str, Any], delta: dict[str, Any], finish_reason: Any = _UNSET
) -> dict[str, Any]:
    choice = {**chunk["choices"][0], "delta": delta}
    if finish_reason is not _UNSET:
        choice["finish_reason"] = finish_reason
    return {**chunk, "choices": [choice]}


def _partial_open(text: str) -> int:
    """How many characters at the end of `text` could begin `<tool_call>`."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
