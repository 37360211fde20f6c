"""Reading OpenAI's shapes: what an answer says, and nothing raised by one that is malformed."""

from __future__ import annotations

from typing import Any

import pytest

from router.openai_shapes import (
    choice_delta,
    choices_of,
    delta_text,
    finish_reason,
    first_message,
    message_text,
    token_logprobs,
    tool_calls,
    usage_of,
    usage_tokens,
)

CALL = {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
ANSWER = {
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "done", "tool_calls": [CALL]},
            "logprobs": {"content": [{"token": "done", "logprob": -0.5}]},
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


def test_an_answer_reads_as_sent() -> None:
    message = first_message(ANSWER)
    assert message_text(message) == "done"
    assert tool_calls(message) == [CALL]
    (choice,) = choices_of(ANSWER)
    assert finish_reason(choice) == "tool_calls"
    assert token_logprobs(choice) == [{"token": "done", "logprob": -0.5}]
    usage = usage_of(ANSWER)
    assert usage is not None
    assert [usage_tokens(usage, kind) for kind in ("prompt", "completion", "total")] == [12, 3, 15]


def test_a_stream_chunk_reads_its_delta() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"reasoning_content": "hm", "content": None}}]}
    (choice,) = choices_of(chunk)
    delta = choice_delta(choice)
    assert delta_text(delta) == ""
    assert delta_text(delta, "reasoning_content") == "hm"
    assert finish_reason(choice) is None


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"choices": None},
        {"choices": []},
        {"choices": [None, {"message": {"content": "second"}}]},
        {"choices": [{"message": "text", "logprobs": {"content": [None]}}], "usage": [1]},
        {"choices": [{"message": {"content": 7, "tool_calls": [None, "x"]}}]},
    ],
)
def test_a_malformed_answer_reads_as_empty(answer: dict[str, Any]) -> None:
    message = first_message(answer)
    assert message_text(message) == ""
    assert not tool_calls(message)
    assert usage_of(answer) is None
    assert not any(token_logprobs(choice) for choice in choices_of(answer))
