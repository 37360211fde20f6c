"""The fake upstream's `/v1/responses`: an upstream that serves OpenAI's Responses API itself
(as vLLM and OpenAI do), behaviour chosen by model name as in tests/fake_upstream.py:

  echo            answers "echo: <the last user text>"; with function tools offered (and
                  tool_choice not "none") calls the first one, unless the input ends with a
                  function call's output, which it answers "tool said: <output>"
  error-500       500 with a JSON error
  die-mid-stream  streams two events, then drops the connection

It refuses `previous_response_id` (400): the proxy keeps conversations and must send the
whole input.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value or [])


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))


def output_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = _items(body)
    last = items[-1] if items else {}
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    if last.get("type") == "function_call_output":
        text = f"tool said: {_text_of(last.get('output'))}"
    elif tools and body.get("tool_choice") != "none":
        return [
            {
                "type": "function_call",
                "id": "fc_" + secrets.token_hex(8),
                "call_id": "call_" + secrets.token_hex(4),
                "name": tools[0]["name"],
                "arguments": orjson.dumps({"echo": True}).decode(),
                "status": "completed",
            }
        ]
    else:
        users = [
            i for i in items if i.get("type", "message") == "message" and i.get("role") == "user"
        ]
        text = f"echo: {_text_of(users[-1].get('content')) if users else ''}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return [
        {
            "type": "message",
            "id": "msg_" + secrets.token_hex(8),
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
    ]


def response_of(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_up_" + secrets.token_hex(8),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "model": body.get("model"),
        "output": output_of(body),
        "parallel_tool_calls": True,
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "usage": {
            "input_tokens": 13,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 18,
        },
    }


def events_of(body: dict[str, Any]) -> list[bytes]:
    """The stream of a response, event by event, as OpenAI sends it."""
    final = response_of(body)
    shell = {k: v for k, v in final.items() if k != "usage"}
    shell.update(status="in_progress", output=[])
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": shell},
        {"type": "response.in_progress", "response": shell},
    ]
    for index, item in enumerate(final["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "content": []},
                }
            )
            events.append(
                {"type": "response.content_part.added", **where, "content_index": 0, "part": empty}
            )
            words = text.split(" ")
            for i, word in enumerate(words):
                events.append(
                    {
                        "type": "response.output_text.delta",
                        **where,
                        "content_index": 0,
                        "delta": word if i == len(words) - 1 else word + " ",
                        "logprobs": [],
                    }
                )
            events.append(
                {
                    "type": "response.output_text.done",
                    **where,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                }
            )
            events.append(
                {
                    "type": "response.content_part.done",
                    **where,
                    "content_index": 0,
                    "part": item["content"][0],
                }
            )
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "arguments": ""},
                }
            )
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": item["arguments"],
                }
            )
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": final})
    return [
        b"event: "
        + e["type"].encode()
        + b"\ndata: "
        + orjson.dumps({**e, "sequence_number": n})
        + b"\n\n"
        for n, e in enumerate(events)
    ]
