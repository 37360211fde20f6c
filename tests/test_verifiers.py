"""Majority vote among best-of-N samples."""

from __future__ import annotations

import pytest

from router.verifiers import answer_key, majority_vote


def text(content: str) -> dict[str, object]:
    return {"role": "assistant", "content": content}


def call(name: str, arguments: str) -> dict[str, object]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
    }


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The answer is 42.", "So the answer: 42"),
        ("We get \\boxed{1,024} at the end", "1024"),
        ("3 + 4 = 7", "It is 7"),
        ("Paris.", "paris"),
        ("Answer: Knights are A and C", "answer is knights are a and c"),
    ],
)
def test_the_same_answer_written_differently_has_one_key(a: str, b: str) -> None:
    assert answer_key(text(a)) == answer_key(text(b))


def test_different_answers_have_different_keys() -> None:
    assert answer_key(text("The answer is 41")) != answer_key(text("The answer is 42"))
    assert answer_key(call("calc", '{"x": 1}')) != answer_key(call("calc", '{"x": 2}'))


def test_tool_call_arguments_compare_as_json() -> None:
    assert answer_key(call("calc", '{"a": 1, "b": 2}')) == answer_key(call("calc", '{"b":2,"a":1}'))
    assert answer_key(call("calc", "{}")) != answer_key(text("{}"))


def test_the_most_common_answer_wins_and_the_earliest_sample_carries_it() -> None:
    vote = majority_vote([text("It is 41"), text("answer: 42"), text("7"), text("42")])
    assert (vote.chosen, vote.votes, vote.samples) == (1, 2, 4)


def test_a_tie_goes_to_the_earliest_sample() -> None:
    assert majority_vote([text("1"), text("2"), text("2"), text("1")]).chosen == 0
    assert majority_vote([text("a"), text("b"), text("c")]).chosen == 0


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        majority_vote([])
