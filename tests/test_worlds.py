"""The benchmark's simulated worlds: they write what the proxy writes, they are what they say
(hard steps where escalating pays, silent mistakes that look like right answers), and a
seed fixes everything."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo.worlds import NAMES, make_world
from demo.worlds.base import (
    World,
    evaluate,
    exploring_never,
    oracle_behaviour,
    play,
    policy_behaviour,
    write_logs,
)
from demo.worlds.house import FRAGILE, WET, Step
from demo.worlds.proxy_driver import ProxyDriver
from demo.worlds.textgame import TextGameConfig, TextGameEpisode, TextGameWorld
from router.policies.base import PolicyContext, build_policy
from training.dataset import load_dataset

FAILURES = ("That is locked.", "Nothing happens.", "You can't go that way.", "You have lost")


def world_or_skip(name: str) -> World[Any]:
    try:
        return make_world(name)
    except ImportError as exc:
        pytest.skip(str(exc))


def records(directory: Path) -> list[dict[str, Any]]:
    paths = sorted(directory.glob("*.jsonl"))
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


@pytest.mark.parametrize("name", NAMES)
def test_logs_load_as_the_proxys_and_carry_step_feedback(name: str, tmp_path: Path) -> None:
    world = world_or_skip(name)
    steps = write_logs(tmp_path, world, 30, seed=3, budget=4, step_rewards=True)
    data, _ = load_dataset(tmp_path)
    assert data.n_sessions == 30 and data.n_steps == steps
    written = records(tmp_path)
    ids = {r["id"]: r for r in written if r["kind"] == "step"}
    feedback = [r for r in written if r["kind"] == "feedback"]
    assert feedback and all(r["reward"] != 0 for r in feedback)
    for r in feedback:
        step = ids[r["request_id"]]
        assert (step["session"], step["step"]) == (r["session"], r["step"])
    for step in ids.values():
        assert "hard" not in json.dumps(step["state"]["features"])  # the hidden flag stays hidden
        assert (
            step["state"]["features"]["prior_escalations"] == 4 - step["decision"]["budget_before"]
        )


@pytest.mark.parametrize("name", NAMES)
def test_exploration_logs_known_propensities_under_the_hard_budget(
    name: str, tmp_path: Path
) -> None:
    world = world_or_skip(name)
    write_logs(tmp_path, world, 30, seed=4, budget=1, exploration=0.5)
    decisions = [r["decision"] for r in records(tmp_path) if r["kind"] == "step"]
    for d in decisions:
        if d["budget_before"] == 0:
            assert (d["action"], d["propensity"], d["reason"]) == ("base", 1.0, "budget")
        elif d["action"] == "strong":
            assert d["propensity"] == 0.5 and d["explored"]
        else:
            assert d["propensity"] == 0.5 and not d["explored"]
    assert any(d["action"] == "strong" for d in decisions)
    assert any(d["reason"] == "budget" for d in decisions)


@pytest.mark.parametrize("name", NAMES)
def test_the_oracle_beats_never_by_escalating_only_at_hard_steps(name: str) -> None:
    world = world_or_skip(name)
    never = policy_behaviour(build_policy({"kind": "never"}, PolicyContext("agent", "strong")))
    base = evaluate(world, never, 120, 5, 4)
    oracle = evaluate(world, oracle_behaviour(), 120, 5, 4)
    assert oracle["success"] > base["success"] + 0.25
    assert oracle["at_hard"] == 1.0
    assert 0.5 < oracle["interventions"] < 3.5


@pytest.mark.parametrize("name", NAMES)
def test_a_seed_fixes_the_logs(name: str, tmp_path: Path) -> None:
    world = world_or_skip(name)
    for directory, seed in (("a", 6), ("b", 6), ("c", 7)):
        write_logs(tmp_path / directory, world, 15, seed=seed, step_rewards=True)
    assert records(tmp_path / "a") == records(tmp_path / "b")
    first = [r["state"]["messages"] for r in records(tmp_path / "a") if r["kind"] == "step"]
    other = [r["state"]["messages"] for r in records(tmp_path / "c") if r["kind"] == "step"]
    assert first != other


def test_a_real_proxy_logs_what_the_harness_writes(tmp_path: Path) -> None:
    # `always` under a budget of 2 is deterministic and runs out mid-episode, so the proxy's
    # budget ledger, features and step feedback are all compared with the harness's own.
    world = make_world("dataagent")
    always = policy_behaviour(build_policy({"kind": "always"}, PolicyContext("agent", "strong")))
    with ProxyDriver(tmp_path / "proxy", cap=2, concurrency=8) as driver:
        driver.serve({"kind": "always"}, exploration=0.0)
        online = driver.play(world, 20, seed=5, label="t", step_rewards=True)
        driver.stop()
    assert online == evaluate(world, always, 20, 5, 2)
    harness_logs = tmp_path / "harness"
    write_logs(harness_logs, world, 20, 5, 2, behaviour_factory=lambda i: always, step_rewards=True)
    proxied, summary = load_dataset(driver.logs)
    harness, _ = load_dataset(harness_logs)
    assert summary.feedback > 0 and summary.feedback_unmatched == 0
    assert proxied.n_sessions == 20 and proxied.has_step_rewards
    assert proxied.n_steps == harness.n_steps
    for column in ("success", "step", "action", "remaining", "cost", "features"):
        assert np.array_equal(getattr(proxied, column), getattr(harness, column)), column
    assert np.allclose(proxied.reward, harness.reward, atol=1e-6)  # the harness rounds them
    assert proxied.texts == harness.texts  # the proxy logged the world's transcript


def test_the_text_agent_reads_user_observations_and_answers_one_action_line() -> None:
    world = TextGameWorld()
    rollout = play(world, exploring_never(0.3), 0, 1, 4, log=True)
    messages = [r for r in rollout.records if r["kind"] == "step"][-1]["state"]["messages"]
    assert {m["role"] for m in messages} == {"system", "user", "assistant"}
    for m in messages:
        if m["role"] == "assistant":
            assert "tool_calls" not in m
            assert re.fullmatch(r"Thought: .+\nACTION: [a-z ]+", m["content"])


def _play_to_decoy(world: TextGameWorld, index: int) -> tuple[TextGameEpisode, Step] | None:
    """Play an episode rightly up to its first look-alike step."""
    episode = world.new_episode(index, 0)
    while not episode.done:
        step = episode.level.plan[episode.position]
        if step.decoy is not None and step.kind == "take":
            return episode, step
        world.act(episode, escalated=True)
    return None


def _swap(text: str, one: str, other: str) -> str:
    return re.sub(f"{one}|{other}", lambda m: other if m.group(0) == one else one, text)


def test_a_silent_mistake_reads_like_a_right_answer_and_fails_the_task_at_the_end() -> None:
    # Routine steps always right; at hard steps the base model always errs, the strong
    # model never does.
    config = TextGameConfig(weak_hard=0.0, strong_hard=1.0, weak_routine=1.0, strong_routine=1.0)
    world = TextGameWorld(config)
    index = next(i for i in range(200) if _play_to_decoy(world, i) is not None)
    endings = {}
    for escalated in (True, False):
        found = _play_to_decoy(world, index)
        assert found is not None
        episode, step = found
        assert episode.hard
        seen = len(episode.messages)
        reward = world.act(episode, escalated)
        observation = episode.messages[seen + 1]["content"]
        assert re.match(
            r"You take the \w+ \w+\.\nYou are in the [a-z ]+\. You are carrying: ", observation
        )
        assert not any(f in observation for f in FAILURES)
        while not episode.done:
            world.act(episode, escalated=True)
        later = [m["content"] for m in episode.messages[seen:]]
        if not escalated:  # the look-alike's name where the target's was, and the other way
            later = [_swap(text, episode.level.target, step.decoy or "") for text in later]
        endings[escalated] = (reward, world.succeeded(episode), later)
    assert endings[True][0] > 0 and endings[False][0] == 0.0  # only the score tells at once
    assert endings[True][1] and not endings[False][1]
    assert endings[True][2] == endings[False][2]  # the rest of the game reads the same


def test_a_wet_room_or_a_fragile_load_alone_is_routine() -> None:
    world = TextGameWorld()
    kinds = {"wet only": 0, "fragile only": 0, "both": 0}
    for index in range(60):
        episode = world.new_episode(index, 2)
        while not episode.done:
            wet = episode.level.rooms[episode.room].wet
            fragile = any(i.split()[-1] in FRAGILE for i in episode.level.inventory)
            quiet = not episode.last_failed and episode.level.plan[episode.position].decoy is None
            if quiet and not episode.doomed and (wet or fragile):
                kind = "both" if wet and fragile else "wet only" if wet else "fragile only"
                kinds[kind] += 1
                assert episode.hard == (kind == "both")
                text = episode.messages[-1]["content"]
                assert any(f"You are in the {room}" in text for room in WET) == wet
            world.act(episode, escalated=False)
    assert min(kinds.values()) > 10


def test_a_grid_agent_that_adopts_a_look_alike_walks_there_in_ordinary_moves() -> None:
    from demo.worlds.gridtext import GridTextConfig, GridTextWorld

    config = GridTextConfig(weak_hard=0.0, strong_hard=1.0, weak_routine=1.0, strong_routine=1.0)
    try:
        world = GridTextWorld(config)
    except ImportError as exc:
        pytest.skip(str(exc))
    for index in range(100):
        episode = world.new_episode(index, 0)
        while not episode.done and episode.look_alike is None:
            world.act(episode, escalated=True)
        if episode.done:
            continue
        seen = len(episode.messages)
        while not episode.done:
            world.act(episode, escalated=episode.look_alike is None)  # errs at the look-alike
        later = [m["content"] for m in episode.messages[seen:]]
        assert not world.succeeded(episode) and episode.gave_up
        assert later[-1].endswith("ACTION: done")
        assert not any(f in text for f in FAILURES for text in later)
        return
    pytest.fail("no episode met a look-alike")


def reasoning_world_or_skip(**config: float) -> Any:
    from demo.worlds.reasoning import ReasoningConfig, ReasoningWorld

    try:
        return ReasoningWorld(ReasoningConfig(**config))
    except ImportError as exc:
        pytest.skip(str(exc))


STEP = re.compile(r"Step \d+: (?:an? [a-z ]+ has \d+ legs, so |[0-9a-z] is \d+, so )?.+ = .+\.")


def test_the_reasoning_agent_writes_one_step_per_reply_and_a_checker_answers() -> None:
    world = reasoning_world_or_skip()
    for index in range(30):
        rollout = play(world, exploring_never(0.3), index, 1, 4, log=True)
        steps = [r for r in rollout.records if r["kind"] == "step"]
        answer = {"role": "assistant", **steps[-1]["response"]}
        assert answer.pop("tool_calls") is None
        messages = [*steps[-1]["state"]["messages"], answer]
        assert [m["role"] for m in messages[:2]] == ["system", "user"]
        for m in messages[2:]:
            assert "tool_calls" not in m and m["role"] in ("user", "assistant")
            if m["role"] == "assistant":
                assert STEP.fullmatch(m["content"]) or re.fullmatch(
                    r"Final answer: \S+", m["content"]
                )
            else:
                assert re.match(r"(Checked: |Check failed: ).+\n[A-Z]", m["content"])
            assert not re.search(r"hard|difficult|silent|misread|premise", m["content"], re.I)


def test_reasoning_hard_steps_of_all_three_kinds_and_never_below_always() -> None:
    world = reasoning_world_or_skip()
    kinds = {"visible": 0, "trajectory": 0, "silent": 0}
    for index in range(150):
        episode = world.new_episode(index, 3)
        while not episode.done:
            move = episode.procedure.move(episode.state)
            if episode.hard:
                assert move is not None
                kinds["visible"] += move.large
                kinds["trajectory"] += episode.flagged
                kinds["silent"] += move.misread is not None
                if episode.flagged:  # the newest observation says so
                    assert episode.messages[-1]["content"].startswith("Check failed:")
            world.act(episode, escalated=False)
    assert min(kinds.values()) >= 10
    assert 0.7 < sum(kinds.values()) / 150 < 2.5
    always = policy_behaviour(build_policy({"kind": "always"}, PolicyContext("agent", "strong")))
    never = policy_behaviour(build_policy({"kind": "never"}, PolicyContext("agent", "strong")))
    weak, strong = evaluate(world, never, 200, 8, 4), evaluate(world, always, 200, 8, 100)
    assert 0.5 < weak["success"] < 0.8 and strong["success"] > 0.9


def test_a_sums_hardness_is_read_off_the_two_numbers_the_checker_shows() -> None:
    # Three-digit terms alone make no hard step, nor does the running value alone: the
    # carries between the two shown numbers do.
    from demo.worlds.puzzles import ChainSum

    world = reasoning_world_or_skip()
    seen: dict[tuple[int, str, int], bool] = {}
    for index in range(300):
        episode = world.new_episode(index, 4)
        while isinstance(episode.procedure, ChainSum) and not episode.done:
            move = episode.procedure.move(episode.state)
            quiet = not episode.flagged and not episode.doomed and move and not move.misread
            if quiet and episode.step > 0:
                value, ((sign, term), *_) = episode.state
                newest = episode.messages[-1]["content"]
                assert f"Running value: {value}. Still to apply: {sign} {term}" in newest
                assert seen.setdefault((value, sign, term), episode.hard) == episode.hard
            world.act(episode, escalated=False)
    large = [hard for (value, _, term), hard in seen.items() if abs(value) >= 100 <= term]
    assert sum(large) > 10 and len(large) - sum(large) > 10

    # 657 + 478 carries three times, 600 + 300 never, though both are three-digit sums.
    carrying, plain = ChainSum().move((657, (("+", 478),))), ChainSum().move((600, (("+", 300),)))
    assert carrying is not None and carrying.large and plain is not None and not plain.large


def _play_to_misread(world: Any, index: int) -> Any:
    """Play an episode rightly up to its first step with a tempting wrong premise."""
    episode = world.new_episode(index, 0)
    while not episode.done:
        move = episode.procedure.move(episode.state)
        if move is not None and move.misread is not None and not move.large:
            return episode
        world.act(episode, escalated=True)
    return None


def test_a_misread_premise_passes_the_check_and_fails_only_the_final_answer() -> None:
    # Routine steps always right; at hard steps the base model always errs, the strong
    # model never does.
    world = reasoning_world_or_skip(
        weak_hard=0.0, strong_hard=1.0, weak_routine=1.0, strong_routine=1.0
    )
    tasks = set()
    for index in range(60):
        if _play_to_misread(world, index) is None:
            continue
        endings = {}
        for escalated in (True, False):
            episode = _play_to_misread(world, index)
            seen = len(episode.messages)
            reward = world.act(episode, escalated)
            checked = episode.messages[seen + 1]["content"]
            assert checked.startswith("Checked: ") and "fail" not in checked
            while not episode.done:
                world.act(episode, escalated=True)
            later = [m["content"] for m in episode.messages[seen:]]
            assert not any(text.startswith("Check failed") for text in later)
            endings[escalated] = (reward, world.succeeded(episode), later[-1])
        assert endings[True][0] > 0 and endings[False][0] == 0.0  # only the reward tells
        assert endings[True][1] and not endings[False][1]  # the dataset's score says so
        assert endings[False][2].startswith("Final answer: ")
        tasks.add(type(episode.procedure).__name__)
    assert tasks == {"ChainSum", "LegCount", "BaseConversion"}


def test_the_proxys_agreement_checks_log_what_the_harness_writes(tmp_path: Path) -> None:
    # The simulated upstream is scripted with the world's own answers, so the proxy's checks
    # (a real base-model call after each escalated step, compared as text) must agree with
    # the harness's records step for step.
    world = make_world("textgame")
    always = policy_behaviour(build_policy({"kind": "always"}, PolicyContext("agent", "strong")))
    with ProxyDriver(tmp_path / "proxy", cap=2, concurrency=8) as driver:
        driver.serve({"kind": "always"}, exploration=0.0)
        driver.play(world, 20, seed=5, label="t")
        driver.stop()
    write_logs(tmp_path / "harness", world, 20, 5, 2, behaviour_factory=lambda i: always)
    proxied, summary = load_dataset(driver.logs)
    harness, _ = load_dataset(tmp_path / "harness")
    assert summary.agreement_checks == 40  # two escalated steps per episode
    assert np.array_equal(proxied.agreement, harness.agreement, equal_nan=True)
    assert 0 < np.nanmean(proxied.agreement) < 1


def test_the_proxys_checks_of_base_steps_log_what_the_harness_writes(tmp_path: Path) -> None:
    # The base model answers every step and each is checked against the intervention (the
    # scripted strong answer, asked in the background): the same labels as the harness's.
    world = make_world("textgame")
    never = policy_behaviour(build_policy({"kind": "never"}, PolicyContext("agent", "strong")))
    with ProxyDriver(tmp_path / "proxy", cap=2, concurrency=8) as driver:
        driver.serve({"kind": "never"}, exploration=0.0, base_checks=1.0)
        figures = driver.play(world, 10, seed=5, label="t")
        driver.stop()
    write_logs(
        tmp_path / "harness", world, 10, 5, 2, behaviour_factory=lambda i: never, base_checks=1.0
    )
    proxied, summary = load_dataset(driver.logs)
    harness, _ = load_dataset(tmp_path / "harness")
    assert figures["interventions"] == 0
    assert summary.agreement_checks == proxied.n_steps  # every step, none escalated
    assert np.array_equal(proxied.agreement, harness.agreement)
    assert 0 < proxied.agreement.mean() < 1
