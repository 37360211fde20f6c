"""Responses ⇄ chat completions, read as data: items to messages, a chat answer to a
Response, and chat chunks to typed events (every one valid for the openai SDK's types)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from server.errors import InvalidRequest
from server.responses.answers import response_from_chat, response_shell
from server.responses.events import FromChat
from server.responses.translate import chat_messages, chat_request
from tests.openai_spec import nonconforming

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CALL = {"type": "function_call", "call_id": "c1", "name": "open", "arguments": '{"door":1}'}


def test_items_become_the_chat_transcript() -> None:
    items: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look at "},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Opening.", "annotations": []}],
        },
        CALL,
        {**CALL, "call_id": "c2"},
        {"type": "function_call_output", "call_id": "c1", "output": "Error: locked"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "ok"}],
        },
    ]
    messages = chat_messages(items, "Be brief.", strict=True)
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at "},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "Opening.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "open", "arguments": '{"door":1}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "open", "arguments": '{"door":1}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Error: locked"},
        {"role": "tool", "tool_call_id": "c2", "content": "ok"},
    ]


def test_a_refusal_counts_items_from_the_requests_own_input() -> None:
    stored: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"type": "shell_call", "call_id": "s1"},  # made on a model that speaks Responses
    ]
    reference = {"type": "item_reference", "id": "msg_1"}
    with pytest.raises(InvalidRequest) as own:
        chat_messages([stored[0], reference], None, strict=True, chained=1)
    assert own.value.param == "input[0].type"
    with pytest.raises(InvalidRequest) as chain:
        chat_messages([*stored, reference], None, strict=True, chained=2)
    assert chain.value.param == "previous_response_id"
    assert "its item 1's type is 'shell_call'" in chain.value.message
    assert chat_messages([*stored, reference], None, strict=False, chained=2) == [
        {"role": "user", "content": "hi"}  # read leniently (the helper's view), both are skipped
    ]


def test_request_fields_map_onto_chat() -> None:
    body = {
        "model": "agent",
        "input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "max_output_tokens": 32,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        "reasoning": {"effort": "high"},
        "stream": True,
        "store": True,
        "top_k": 5,
    }
    request = chat_request(body, [{"role": "user", "content": "hi"}], strict=True)
    assert request == {
        "model": "agent",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "max_tokens": 32,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}},
        },
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_k": 5,
    }


def test_a_chat_answer_becomes_a_response() -> None:
    completion = {
        "model": "m",
        "created": 1700000000,
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "reasoning_content": "think",
                    "content": "Let me open it.",
                    "tool_calls": [
                        {
                            "id": "c9",
                            "type": "function",
                            "function": {"name": "open", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    response = response_from_chat(completion, {"model": "agent", "tools": []}, "resp_x")
    parsed = Response.model_validate(response)
    assert nonconforming("Response", response) == []
    assert [item.type for item in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.output_text == "Let me open it." and parsed.created_at == 1700000000
    assert parsed.output[2].call_id == "c9"  # type: ignore[union-attr]
    assert parsed.usage is not None and parsed.usage.input_tokens == 5


def test_chat_chunks_become_typed_events() -> None:
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Hmm, "},
        {"reasoning_content": "a door."},
        {"content": "Open"},
        {"content": "ing."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "open", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"door":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "look", "arguments": "{}"},
                }
            ]
        },
    ]
    source = FromChat(response_shell({"model": "agent"}, "resp_1", "agent"))
    events = source.opening()
    for delta in deltas:
        events += source.events({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    events += source.events({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events += source.events({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}})
    events += source.closing()
    for event in events:  # valid for the SDK's types and for OpenAI's specification
        STREAM_EVENT.validate_python(event)
        assert nonconforming("ResponseStreamEvent", event) == [], event["type"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.completed"
    assert (
        kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 4
    )
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert final.output_text == "Opening."
    assert final.output[2].arguments == '{"door":1}'  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens == 9
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [e["arguments"] for e in done] == ['{"door":1}', "{}"]


def test_a_length_cut_stream_is_incomplete() -> None:
    source = FromChat(response_shell({"model": "agent"}, "resp_2", "agent"))
    events = source.opening()
    events += source.events({"choices": [{"delta": {"content": "abc"}, "finish_reason": "length"}]})
    events += source.closing()
    assert events[-1]["type"] == "response.incomplete"
    STREAM_EVENT.validate_python(events[-1])
    assert nonconforming("ResponseStreamEvent", events[-1]) == []
    failed = FromChat(response_shell({"model": "agent"}, "resp_3", "agent")).failed(
        {"message": "x"}
    )
    assert nonconforming("ResponseStreamEvent", failed) == []
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def _logprobs(*tokens: str) -> dict[str, Any]:
    top = [{"token": "x", "logprob": -2.0, "bytes": [120]}]
    return {
        "content": [
            {"token": t, "logprob": -0.5, "bytes": list(t.encode()), "top_logprobs": top}
            for t in tokens
        ]
    }


def test_logprobs_asked_for_are_translated_both_ways() -> None:
    body = {"model": "agent", "include": ["message.output_text.logprobs"], "top_logprobs": 1}
    request = chat_request(body, [{"role": "user", "content": "hi"}], strict=True)
    assert (request["logprobs"], request["top_logprobs"]) == (True, 1)
    completion = {
        "choices": [{"message": {"content": "Hi there"}, "logprobs": _logprobs("Hi", " there")}]
    }
    response = response_from_chat(completion, body, "resp_l")
    assert nonconforming("Response", response) == []
    (part,) = response["output"][0]["content"]
    assert [t["token"] for t in part["logprobs"]] == ["Hi", " there"]
    assert part["logprobs"][0]["top_logprobs"] == [{"token": "x", "logprob": -2.0, "bytes": [120]}]

    source = FromChat(response_shell(body, "resp_s", "agent"))
    events = source.opening()
    for token in ("Hi", " there"):
        chunk = {"choices": [{"delta": {"content": token}, "logprobs": _logprobs(token)}]}
        events += source.events(chunk)
    events += source.events({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    events += source.closing()
    for event in events:
        STREAM_EVENT.validate_python(event)
        assert nonconforming("ResponseStreamEvent", event) == [], event["type"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [d["logprobs"][0]["token"] for d in deltas] == ["Hi", " there"]
    (done,) = [e for e in events if e["type"] == "response.output_text.done"]
    assert [t["token"] for t in done["logprobs"]] == ["Hi", " there"]
