"""Trajectory features of a step."""

from __future__ import annotations

import pytest

from router.embedding import HashedNgrams
from router.openai_shapes import message_text
from router.state import extract_features, recent_text, state_text


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


def react(action: str, thought: str = "Let me think.") -> dict[str, object]:
    return {"role": "assistant", "content": f"Thought: {thought}\nACTION: {action}"}


GAME = [
    {"role": "system", "content": "You play a text game."},
    {"role": "user", "content": "Your task: put the mug in the cabinet. You are in the hall."},
    react("go north", "The kitchen is north."),
    {"role": "user", "content": "You can't go that way."},
    react("go north", "Maybe again."),
    {"role": "user", "content": "You can't go that way."},
]


def test_observations_in_user_messages_count_like_tool_results() -> None:
    features = extract_features(GAME, step=2)
    assert features["obs_failed"] == 1 and features["failure_streak"] == 2
    assert features["obs_repeated"] == 1 and features["stuck_streak"] == 2
    assert features["repeated_actions"] == 1  # the thoughts differ, the action does not
    assert features["obs_from_user"] == 1 and features["obs_from_tool"] == 0
    assert features["last_tool_error"] == 0  # the tool-only feature stays what it was


def test_the_same_failure_reads_the_same_from_a_tool_or_a_user() -> None:
    as_tool = [
        {"role": "user", "content": "Fetch the report."},
        call("fetch", '{"id": 7}'),
        {"role": "tool", "content": "error: report 7 not found"},
    ]
    as_user = [*as_tool[:2], {"role": "user", "content": "error: report 7 not found"}]
    tool, user = extract_features(as_tool, 1), extract_features(as_user, 1)
    for name in ("obs_failed", "failure_streak", "obs_failure_rate", "obs_log_chars"):
        assert tool[name] == user[name] == pytest.approx(tool[name])
    assert tool["obs_failed"] == 1


@pytest.mark.parametrize(
    "refusal",
    [
        "That is locked.",
        "You have to open the fridge first.",
        "You need to unlock the door to the north first.",
        "It is already open.",
        "That's not a verb I recognise.",
        "No known action matches that input.",
        "The key doesn't fit.",
        "You can't see any such thing.",
        "Nothing happens.",
    ],
)
def test_a_game_refusal_reads_as_a_failed_step(refusal: str) -> None:
    game = [
        {"role": "user", "content": "Your task: put the mug in the cabinet."},
        react("do something"),
        {"role": "user", "content": f"{refusal}\nYou are in the hall."},
    ]
    assert extract_features(game, 1)["obs_failed"] == 1


@pytest.mark.parametrize(
    "progress",
    [
        "You are in the kitchen. You see a closed fridge and a mug.",
        "You open the fridge. It is empty.",
        "You take the mug first, then look around.",
        "You unlock the door with the key ring.",
    ],
)
def test_an_ordinary_observation_does_not(progress: str) -> None:
    game = [
        {"role": "user", "content": "Your task: put the mug in the cabinet."},
        react("do something"),
        {"role": "user", "content": progress},
    ]
    assert extract_features(game, 1)["obs_failed"] == 0


def test_state_text_keeps_the_newest_observation_apart_and_last() -> None:
    text = state_text([*GAME, react("open door"), {"role": "user", "content": "It is locked."}])
    lines = text.splitlines()
    assert lines[0].startswith("TASK: Your task: put the mug")
    assert lines[-2] == "ACTION: ACTION: open door"
    assert lines[-1] == "OBSERVATION: It is locked."
    assert "EARLIER: You can't go that way." in lines
    assert (
        state_text(GAME[:2]) == "TASK: Your task: put the mug in the cabinet. You are in the hall."
    )


def test_a_long_history_never_crowds_out_the_newest_observation() -> None:
    history = [{"role": "user", "content": "task"}]
    for i in range(200):
        history += [react(f"look {i}"), {"role": "user", "content": "x" * 500}]
    history += [react("take mug"), {"role": "user", "content": "You take the mug."}]
    assert state_text(history, max_chars=2_000).endswith("OBSERVATION: You take the mug.")


def test_content_parts_that_are_not_text_are_ignored() -> None:
    odd = {"role": "user", "content": [{"type": "text", "text": 5}, {"text": None}, "raw", {}]}
    assert message_text(odd) == ""
    assert extract_features([odd], 0)["n_messages"] == 1


def test_labelled_hashing_tells_the_observation_from_the_task() -> None:
    embed = HashedNgrams(dim=64, text="labelled")
    in_task = embed.embed("TASK: locked door")
    in_observation = embed.embed("OBSERVATION: locked door")
    assert in_task != in_observation
    assert HashedNgrams(dim=64).embed("TASK: locked door") != in_task


def test_word_pairs_of_the_newest_observation_make_a_conjunction_linear() -> None:
    """Hard where the player is in a wet room AND carries something fragile: no weighted sum
    of single n-grams separates it; one pair bucket does."""
    embed = HashedNgrams(dim=64, text="labelled", pairs=256)
    rooms, loads = ("kitchen", "hallway"), ("vase", "rope")

    def pairs(room: str, load: str) -> list[float]:
        text = f"TASK: tidy up\nOBSERVATION: You are in the {room}. You carry a {load}."
        vector = embed.embed(text)
        assert len(vector) == embed.width == 64 + 256
        return vector[64:]

    hard = pairs("kitchen", "vase")
    routine = [pairs(r, w) for r in rooms for w in loads if (r, w) != ("kitchen", "vase")]
    only_hard = [i for i, x in enumerate(hard) if x and not any(v[i] for v in routine)]
    assert only_hard  # the (kitchen, vase) pair's bucket, set in no routine state
    # Pairs come from the newest observation alone, whatever the order of its words.
    assert pairs("kitchen", "vase") == hard
    assert embed.embed("TASK: You are in the kitchen. You carry a vase.")[64:] == [0.0] * 256
    with pytest.raises(ValueError, match="labelled"):
        HashedNgrams(dim=64, pairs=16)


def test_word_buckets_hold_the_newest_observation_and_action_each_in_its_own_namespace() -> None:
    embed = HashedNgrams(dim=64, text="labelled", pairs=32, words=512)
    assert embed.width == 64 + 32 + 512

    def words(text: str) -> list[float]:
        vector = embed.embed(text)
        assert len(vector) == embed.width
        return vector[64 + 32 :]

    seen = words("TASK: fetch the vase\nOBSERVATION: You see a vase. A vase!")
    assert sum(seen) == 4.0  # you, see, a, vase: present or not, however often
    assert words("TASK: fetch the vase\nEARLIER: You see a vase.") == [0.0] * 512
    # "vase" in the action and in the observation are different inputs.
    acted = words("ACTION: take vase")
    assert sum(acted) == 2.0
    assert [i for i, x in enumerate(acted) if x] != [
        i for i, x in enumerate(words("OBSERVATION: take vase")) if x
    ]
    with pytest.raises(ValueError, match="labelled"):
        HashedNgrams(dim=64, words=16)
