"""A Responses request as the chat step it is.

Input items map onto chat messages: a `message` item onto a message of its role, a run of
`function_call` items onto one assistant message's `tool_calls`, a `function_call_output`
onto a `tool` message (the agent's observation), and `instructions` onto a leading system
message. `reasoning` items are the model's own thoughts and have no chat form: they are left
out. Anything else (`item_reference`, built-in tools' calls, ...) cannot be said in chat: a
*strict* translation refuses it (400 naming it), a *lenient* one, which only reads the step
for the helper, skips it. The answer's way back is server/responses/answers.py.
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequest

# Fields of a Responses request that are translated or have no chat meaning; every other
# field reaches the chat upstream as it came.
RESPONSES_ONLY = frozenset(
    {
        "input",
        "instructions",
        "previous_response_id",
        "store",
        "max_output_tokens",
        "max_tool_calls",
        "text",
        "reasoning",
        "tools",
        "tool_choice",
        "include",
        "truncation",
        "background",
        "background_options",
        "conversation",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "context_management",
        "stream_options",
        "top_logprobs",
        "metadata",
        "n",  # a Response is one answer
        "access_programs",
        "image",
        "moderation",
    }
)
LOGPROBS = "message.output_text.logprobs"  # what `include` names to have them returned
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


def item_type(item: dict[str, Any]) -> Any:
    """An item's type: one without is a message when it has a role (OpenAI's easy input
    message), else a reference to an item by its id."""
    if "type" in item and item["type"] is not None:
        return item["type"]
    return "message" if "role" in item else "item_reference"


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as items (a string is one user message)."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value)


def chat_messages(
    items: list[dict[str, Any]], instructions: Any, *, strict: bool, chained: int = 0
) -> list[dict[str, Any]]:
    """The transcript as chat messages. `items` are the `chained` items of the stored
    conversation `previous_response_id` continues, then the request's own `input`: a refusal
    names `input[k]` by its place in the request, and an item of the stored conversation by
    `previous_response_id` (the client never sent it at any index of this request)."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(items):
        kind = item_type(item)
        if kind == "message":
            messages.append(_message(item, i, chained, strict))
        elif kind == "function_call":
            if strict:
                _require_strings(item, i, chained, "call_id", "name", "arguments")
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and _open_for_calls(last):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if strict:
                _require_strings(item, i, chained, "call_id")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": _output_text(item.get("output")),
                }
            )
        elif kind == "reasoning":
            continue
        elif strict:
            raise _refusal(
                f"is {kind!r}, an item chat completions cannot carry (this model's upstream is "
                "reached through them).",
                i,
                chained,
                ".type",
                "unsupported_input_item",
            )
    return messages


def _refusal(why: str, i: int, chained: int, field: str, code: str | None = None) -> InvalidRequest:
    """A 400 naming where item `i` came from: the request's own `input[k]`, or the stored
    conversation that `previous_response_id` continues (made on a model that could take it,
    continued on one whose upstream takes chat completions)."""
    if i >= chained:
        where = f"input[{i - chained}]{field}"
        return InvalidRequest(f"{where} {why}", param=where, code=code)
    return InvalidRequest(
        "The conversation stored for previous_response_id cannot be continued on this model: "
        f"its item {i}'s {field.removeprefix('.')} {why} (Its items are its responses' input "
        "and output items, counted from 0.) Continue it on the model it was made on, or send "
        "what this model can take as input.",
        param="previous_response_id",
        code=code,
    )


def _require_strings(item: dict[str, Any], i: int, chained: int, *fields: str) -> None:
    """What a chat message needs of a call item (the spec lets some be null elsewhere)."""
    for field in fields:
        if not isinstance(item.get(field), str):
            raise _refusal(
                "must be a string to send this item through chat completions.",
                i,
                chained,
                f".{field}",
            )


def _open_for_calls(message: dict[str, Any]) -> bool:
    # Tool calls follow the assistant text of the same turn, never a turn already answered.
    return "tool_call_id" not in message


def _message(item: dict[str, Any], i: int, chained: int, strict: bool) -> dict[str, Any]:
    role = item["role"]
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content or []):
        kind = part.get("type")
        if kind in TEXT_PARTS:
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            image = {"url": part.get("image_url") or part.get("file_id")}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if k in part}
            parts.append({"type": "file", "file": file})
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part.get("input_audio")})
        elif strict:
            raise _refusal(
                f"is {kind!r}, a content part chat completions cannot carry (this model's "
                "upstream is reached through them).",
                i,
                chained,
                f".content[{j}].type",
                "unsupported_input_item",
            )
    if role == "assistant" or all(p["type"] == "text" for p in parts):
        # Assistant turns (and all-text messages) as plain text: every chat server reads it.
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(
            str(p.get("text", "")) for p in output if isinstance(p, dict) and p.get("type")
        )
    return ""


def chat_tools(tools: list[dict[str, Any]], *, strict: bool) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            if strict:
                raise InvalidRequest(
                    f"Tools of type {tool.get('type')!r} cannot be offered to this model: its "
                    "upstream is reached through chat completions, which take function tools.",
                    param=f"tools[{i}].type",
                    code="unsupported_tool",
                )
            continue
        function: dict[str, Any] = {
            k: tool[k] for k in ("name", "description", "parameters") if k in tool
        }
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice  # "none" | "auto" | "required"
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("type") == "allowed_tools":
        tools = [
            {"type": "function", "function": {"name": t.get("name")}}
            for t in choice.get("tools", [])
            if isinstance(t, dict)
        ]
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode"), "tools": tools},
        }
    return "required"  # a built-in tool chosen: the closest chat can say


def chat_request(
    body: dict[str, Any], items: list[dict[str, Any]], *, strict: bool, chained: int = 0
) -> dict[str, Any]:
    """The chat completion request that carries this Responses request's step; `items` are
    the `chained` items of the stored conversation, then the request's own (chat_messages)."""
    if strict and body.get("prompt") is not None:
        raise InvalidRequest(
            "Stored prompts (`prompt`) cannot be used with this model: its upstream is reached "
            "through chat completions; send the prompt's text as input.",
            param="prompt",
            code="unsupported_parameter",
        )
    request = {k: v for k, v in body.items() if k not in RESPONSES_ONLY}
    request["messages"] = chat_messages(
        items, body.get("instructions"), strict=strict, chained=chained
    )
    tools = chat_tools(body.get("tools") or [], strict=strict)
    if tools:
        request["tools"] = tools
        if body.get("tool_choice") is not None:
            request["tool_choice"] = chat_tool_choice(body["tool_choice"])
    if body.get("max_output_tokens") is not None:
        request["max_tokens"] = body["max_output_tokens"]
    text: dict[str, Any] = body["text"] if isinstance(body.get("text"), dict) else {}
    fmt: dict[str, Any] = text["format"] if isinstance(text.get("format"), dict) else {}
    if fmt.get("type") == "json_object":
        request["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        request["response_format"] = {"type": "json_schema", "json_schema": schema}
    if text.get("verbosity") is not None:
        request["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        request["reasoning_effort"] = reasoning["effort"]
    include = body.get("include")
    wants_logprobs = isinstance(include, list) and LOGPROBS in include
    if wants_logprobs or body.get("top_logprobs"):
        request["logprobs"] = True
        if body.get("top_logprobs"):
            request["top_logprobs"] = body["top_logprobs"]
    if body.get("stream") is True:
        request["stream_options"] = {"include_usage": True}
    return request
