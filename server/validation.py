"""What the proxy checks in a chat request before it acts on it.

Only what the proxy itself relies on is checked; every other field reaches the upstream
unchanged. Every refusal is a 400 envelope naming the parameter.
"""

from __future__ import annotations

from typing import Any

import orjson

from server.errors import InvalidRequest

# orjson writes at most 254 levels of arrays and objects. A routed step's body is written
# again for the upstream, and its messages one level down in the step record.
MAX_NESTING = 253
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def require_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")


def check_chat_body(body: dict[str, Any]) -> None:
    """Every chat request, routed or passed through."""
    require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]"
            )


def check_routed_step(body: dict[str, Any], raw: bytes, *, max_n: int) -> None:
    """A request to a route, which the proxy decides on, budgets, re-sends and logs: its
    transcript is read by the helper, and one budget unit buys its `n` choices."""
    for i, message in enumerate(body["messages"]):
        if message["role"] not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, "
                f"not {message['role']!r}.",
                param=f"messages[{i}].role",
            )
        _check_text_parts(message.get("content"), i)
    n = body.get("n")
    if n is not None and not (_is_integer(n) and 1 <= n <= max_n):
        raise InvalidRequest(f"'n' must be an integer from 1 to {max_n} on this route.", param="n")
    for param in ("max_tokens", "max_completion_tokens"):
        value = body.get(param)
        if value is not None and not (_is_integer(value) and value >= 1):
            raise InvalidRequest(f"'{param}' must be an integer of at least 1.", param=param)
    check_nesting(body, raw)


def _check_text_parts(content: Any, i: int) -> None:
    """A text part's `text` is what the helper reads: a string, or the request is a 400."""
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        is_text = isinstance(part, dict) and part.get("type") == "text"
        if is_text and not isinstance(part.get("text"), str):
            raise InvalidRequest(
                f"messages[{i}].content[{j}].text must be a string.",
                param=f"messages[{i}].content[{j}].text",
            )


def _is_integer(value: Any) -> bool:
    """An integer as JSON Schema means it: 49 and 49.0 alike, `true` not."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def check_nesting(body: dict[str, Any], raw: bytes) -> None:
    """Refuse a body nested too deeply to be written again (the step record, the upstream's
    request): a 400 naming the parameter, never a failure half-way through the step."""
    # Nesting needs an opening bracket per level: most bodies are cleared by counting them,
    # and the rest by orjson, which refuses what is too deep for the step record (the body
    # one level down) in C; only a body it refuses is walked, to name the parameter.
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return
    try:
        orjson.dumps([body])  # one level more, as in the step record: orjson's limit is 254
        return
    except orjson.JSONEncodeError:
        pass
    too_deep = _too_deep(body)
    if too_deep is not None:
        raise InvalidRequest(
            f"'{too_deep}' is nested more than {MAX_NESTING} levels deep.", param=too_deep
        )


def _too_deep(body: dict[str, Any]) -> str | None:
    """The parameter (named to three levels) holding a value nested deeper than allowed."""
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]  # (value, parameter, its level)
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_NESTING and isinstance(value, (dict, list)):
            return where
        named = depth <= 3
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                stack.append((item, path if named else where, depth + 1))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                stack.append((item, f"{where}[{i}]" if named else where, depth + 1))
    return None
