"""What the proxy checks in a Responses request before it acts on it: what it reads itself
(to translate the request, read the step, chain it, or echo it back). Every other field
reaches the upstream unchanged. Every refusal is a 400 envelope naming the parameter."""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequest
from server.responses.translate import TEXT_PARTS, item_type
from server.validation import check_nesting, require_model

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
MIN_OUTPUT_TOKENS = 16  # OpenAI's minimum for max_output_tokens


# Features of OpenAI's service the proxy does not provide: refused rather than ignored.
UNSUPPORTED = {
    "conversation": "Conversations are not kept by this proxy: chain responses with "
    "previous_response_id.",
    "background": "Background responses are not supported by this proxy: send stream=true to "
    "read a long answer as it is written.",
}


def check_responses_body(body: dict[str, Any], raw: bytes) -> None:
    require_model(body)
    for param, why in UNSUPPORTED.items():
        if body.get(param) not in (None, False):
            raise InvalidRequest(why, param=param, code="unsupported_parameter")
    value = body.get("input")  # optional, as in the spec; a route needs a step to read
    if value is not None and not isinstance(value, (str, list)):
        raise InvalidRequest("'input' must be a string or an array of items.", param="input")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_item(item, i)
    _optional(body, "instructions", str, "a string")
    _optional(body, "previous_response_id", str, "a string")
    _optional(body, "store", bool, "a boolean")
    _optional(body, "parallel_tool_calls", bool, "a boolean")
    _optional(body, "metadata", dict, "an object")
    _optional(body, "text", dict, "an object")
    _optional(body, "reasoning", dict, "an object")
    tokens = body.get("max_output_tokens")
    if tokens is not None and not (_is_integer(tokens) and tokens >= MIN_OUTPUT_TOKENS):
        raise InvalidRequest(
            f"'max_output_tokens' must be an integer of at least {MIN_OUTPUT_TOKENS}.",
            param="max_output_tokens",
        )
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array.", param="tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise InvalidRequest(
                    f"tools[{i}] must be an object with a string 'type'.", param=f"tools[{i}]"
                )
            if tool["type"] == "function" and not isinstance(tool.get("name"), str):
                raise InvalidRequest(f"tools[{i}].name must be a string.", param=f"tools[{i}].name")
    choice = body.get("tool_choice")
    if choice is not None and not (
        (isinstance(choice, str) and choice in TOOL_CHOICES)
        or (isinstance(choice, dict) and isinstance(choice.get("type"), str))
    ):
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or an object with a 'type'.",
            param="tool_choice",
        )
    if (
        isinstance(choice, dict)
        and choice["type"] == "function"
        and not isinstance(choice.get("name"), str)
    ):
        raise InvalidRequest("tool_choice.name must be a string.", param="tool_choice.name")
    # Every request is written again (to the upstream, the response store, the step log).
    check_nesting(body, raw)


def _check_item(item: Any, i: int) -> None:
    where = f"input[{i}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    kind = item_type(item)
    if not isinstance(kind, str):
        raise InvalidRequest(f"{where}.type must be a string.", param=f"{where}.type")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise InvalidRequest(
                f"{where}.role must be one of {', '.join(sorted(MESSAGE_ROLES))}.",
                param=f"{where}.role",
            )
        content = item.get("content")
        if not isinstance(content, (str, list)):
            raise InvalidRequest(
                f"{where}.content must be a string or an array of parts.",
                param=f"{where}.content",
            )
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(
                    f"{where}.content[{j}] must be an object with a string 'type'.",
                    param=f"{where}.content[{j}]",
                )
            if part["type"] in TEXT_PARTS and not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"{where}.content[{j}].text must be a string.",
                    param=f"{where}.content[{j}].text",
                )


def _optional(body: dict[str, Any], name: str, kind: type, what: str) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"'{name}' must be {what}.", param=name)


def _is_integer(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)
