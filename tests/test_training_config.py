"""`escalator train`'s options are generated from its documented configuration: every field
has its option, every option its help and default, and the PRM's part is the same values."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from rich.console import Console

from training.cli import Rollout, add_arguments, run
from training.config import TrainConfig
from training.options import add_options, from_options


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def parse(*argv: str) -> TrainConfig:
    return from_options(TrainConfig, parser().parse_args(["--logs", "L", "--out", "O", *argv]))


def test_every_field_is_an_option_with_its_help_and_default() -> None:
    actions = {a.dest: a for a in parser()._actions if a.dest != "help"}
    fields = [*dataclasses.fields(TrainConfig), *dataclasses.fields(Rollout)]
    assert sorted(actions) == sorted(f.name for f in fields)
    for f in fields:
        action = actions[f.name]
        assert action.help, f.name
        flag = isinstance(action, argparse._StoreTrueAction)
        assert flag or action.required or "default" in action.help, f.name


def test_the_defaults_are_the_configs_and_options_parse_to_its_types() -> None:
    assert parse() == TrainConfig(logs="L", out="O")
    config = parse(
        *("--budget", "0.5", "--budget", "2", "--cap", "3", "--embedding", "none"),
        *("--folds", "3", "--select-tolerance", "0.5", "--candidate", "DP helper"),
        *("--embedding-dim", "64", "--prior-strength", "2", "--min-sessions", "5"),
    )
    assert config.budgets == (0.5, 2.0) and config.cap == 3 and config.embedding == "none"
    assert config.folds == 3 and config.select_tolerance == 0.5
    assert config.candidates == ("DP helper",)
    assert (config.embedding_dim, config.prior_strength, config.min_sessions) == (64, 2.0, 5)
    with pytest.raises(SystemExit):
        parser().parse_args(["--logs", "L", "--out", "O", "--prm", "oracle"])


def test_the_prm_is_configured_from_the_same_values() -> None:
    config = parse(
        *("--prm", "judge", "--judge-endpoint", "http://judge/v1", "--judge-model", "m"),
        *("--l2", "0.5", "--max-fit-rows", "1000", "--seed", "7"),
    )
    prm = config.prm_config()
    assert (prm.kind, prm.endpoint, prm.judge_model) == ("judge", "http://judge/v1", "m")
    assert (prm.l2, prm.max_rows, prm.seed) == (0.5, 1000, 7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--folds", "1"], "--folds must be at least 2"),
        (["--holdout", "1"], "--holdout must be between 0 and 1"),
        (["--prm", "transformers"], "--prm transformers needs --prm-model"),
        (["--reload", "http://127.0.0.1:8080"], "--reload needs --install"),
    ],
)
def test_a_bad_option_stops_before_training(argv: list[str], message: str) -> None:
    console = Console(record=True, width=200)
    args = parser().parse_args(["--logs", "missing", "--out", "missing", *argv])
    assert run(args, console) == 2
    assert message in console.export_text()


def test_a_field_without_help_has_no_option() -> None:
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        rate: float = 0.5

    with pytest.raises(TypeError, match="help"):
        add_options(argparse.ArgumentParser(), Undocumented)
