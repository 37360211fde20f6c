"""Trajectory features of a step."""

from __future__ import annotations

from router.state import extract_features, message_text, recent_text


def call(name: str, arguments: str = "{}") -> dict[str, object]:
    return {
        "role": "assistant",
        "tool_calls": [{"function": {"name": name, "arguments": arguments}}],
    }


def test_a_first_user_turn() -> None:
    features = extract_features([{"role": "user", "content": "What is 2+2?"}], step=0)
    assert features["n_messages"] == 1
    assert features["last_tool_error"] == 0
    assert features["last_is_observation"] == 0
    assert features["last_observation_chars"] == len("What is 2+2?")
    assert features["repeated_actions"] == 0


def test_a_failed_tool_call_is_seen_in_the_latest_observation() -> None:
    messages = [
        {"role": "user", "content": "run it"},
        call("python", '{"code": "1/0"}'),
        {"role": "tool", "content": "Traceback (most recent call last): ZeroDivisionError"},
    ]
    features = extract_features(messages, step=1)
    assert features["last_is_observation"] == 1
    assert features["last_tool_error"] == 1
    assert features["tool_error_rate"] == 1.0
    assert features["step"] == 1


def test_a_successful_observation_is_not_an_error() -> None:
    messages = [call("calc"), {"role": "tool", "content": "42"}]
    assert extract_features(messages, step=1)["last_tool_error"] == 0


def test_repeated_actions_count_earlier_identical_tool_calls() -> None:
    messages = [
        call("search", '{"q": "x"}'),
        {"role": "tool", "content": "no results"},
        call("search", '{"q": "y"}'),
        {"role": "tool", "content": "no results"},
        call("search", '{"q": "x"}'),
        {"role": "tool", "content": "no results"},
        call("search", '{"q": "x"}'),
    ]
    assert extract_features(messages, step=4)["repeated_actions"] == 2


def test_content_parts_and_missing_content() -> None:
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert message_text(parts) == "a\nb"
    assert message_text({"role": "assistant", "content": None}) == ""
    assert extract_features([], step=0)["n_messages"] == 0


def test_recent_text_keeps_the_latest_turns() -> None:
    messages = [{"role": "user", "content": f"turn {i}"} for i in range(10)]
    text = recent_text(messages, turns=2)
    assert text == "user: turn 8\nuser: turn 9"


def test_recent_text_shows_an_assistant_turn_as_its_tool_calls() -> None:
    messages = [call("python", '{"code": "1/0"}'), {"role": "tool", "content": "ZeroDivisionError"}]
    assert recent_text(messages) == 'assistant: python({"code": "1/0"})\ntool: ZeroDivisionError'
