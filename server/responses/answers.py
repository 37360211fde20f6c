"""A chat completion as the Response it answers, and the pieces a Response is made of
(output items, usage in either API's words), shared with the event stream."""

from __future__ import annotations

import secrets
import time
from typing import Any

from router.openai_shapes import (
    Json,
    call_function,
    choice_message,
    finish_reason,
    first_choice,
    token_logprobs,
    tool_calls,
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(20)}"


def response_shell(body: dict[str, Any], response_id: str, model: str) -> dict[str, Any]:
    """A Response echoing the request's settings, with no output yet (`in_progress`)."""
    text = body.get("text") if isinstance(body.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": _echo(body, "parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": _echo(body, "store", True),
        "temperature": _echo(body, "temperature", 1.0),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": _echo(body, "tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": _echo(body, "top_p", 1.0),
        "truncation": _echo(body, "truncation", "disabled"),
        "metadata": body.get("metadata") or {},
        # Echoed only when sent: the spec has them strings, never null.
        **{
            k: body[k]
            for k in ("user", "safety_identifier", "prompt_cache_key")
            if body.get(k) is not None
        },
    }


def _echo(body: dict[str, Any], name: str, default: Any) -> Any:
    """The request's value, or the default where it sent none (or null)."""
    value = body.get(name)
    return default if value is None else value


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage in the Responses' words."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage in chat's words (what the step record and metrics count)."""
    if not isinstance(usage, dict):
        return None
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
    }


def reasoning_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": new_id("rs"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def message_item(
    text: str,
    refusal: str | None = None,
    status: str = "completed",
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}
        content.append(part)
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "type": "message",
        "id": new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(call: Json, status: str = "completed") -> dict[str, Any]:
    function = call_function(call)
    return {
        "type": "function_call",
        "id": new_id("fc"),
        "call_id": call.get("id") or new_id("call"),
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
        "status": status,
    }


def finish(response: dict[str, Any], finish_reason: Any, usage: Any) -> dict[str, Any]:
    """The response completed (or cut short by the token limit)."""
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
    counted = response_usage(usage)
    if counted is not None:  # the spec has usage an object when present, never null
        response["usage"] = counted
    return response


def response_from_chat(
    completion: dict[str, Any], body: dict[str, Any], response_id: str
) -> dict[str, Any]:
    """A chat completion as the Response to `body`."""
    response = response_shell(body, response_id, str(completion.get("model") or body["model"]))
    if isinstance(completion.get("created"), int):
        response["created_at"] = completion["created"]
    choice = first_choice(completion)
    message = choice_message(choice)
    status = "incomplete" if finish_reason(choice) == "length" else "completed"
    output: list[dict[str, Any]] = []
    thought = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thought, str) and thought:
        output.append(reasoning_item(thought, status))
    content = message.get("content")
    refusal = message.get("refusal")
    if content or refusal:
        logprobs = output_logprobs(choice)
        output.append(message_item(str(content or ""), refusal, status, logprobs))
    for call in tool_calls(message):
        output.append(function_call_item(call, status))
    response["output"] = output
    return finish(response, finish_reason(choice), completion.get("usage"))


def record_of_output(output: Any) -> dict[str, Any]:
    """A Response's output as the step record keeps an answer: text and tool calls."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text", "")))
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                }
            )
    return {"content": "".join(texts) or None, "tool_calls": calls or None}


def listed_item(item: dict[str, Any], index: int) -> dict[str, Any]:
    """An input item as OpenAI lists it: typed, with an id (`item_<index>` where the client
    gave none) and a message's text as a content part."""
    listed = {"id": f"item_{index}", **item}
    if "type" not in item and "role" in item:
        listed["type"] = "message"
    if listed.get("type") == "message":
        listed.setdefault("status", "completed")
        if isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            listed["content"] = [{"type": kind, "text": item["content"]}]
    return listed


def output_logprobs(choice: Json) -> list[dict[str, Any]]:
    """A chat choice's token logprobs as a Response's output text has them."""
    out = []
    for token in token_logprobs(choice):
        top = token.get("top_logprobs")
        out.append(
            {
                "token": str(token.get("token", "")),
                "logprob": token.get("logprob", 0.0),
                "bytes": token.get("bytes") or [],
                "top_logprobs": [
                    {
                        "token": str(t.get("token", "")),
                        "logprob": t.get("logprob", 0.0),
                        "bytes": t.get("bytes") or [],
                    }
                    for t in (top if isinstance(top, list) else [])
                    if isinstance(t, dict)
                ],
            }
        )
    return out
