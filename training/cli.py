"""`escalator train`: arguments, progress bars, and the closing table."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from training.config import TrainConfig
from training.dataset import DatasetError
from training.evaluation import crowding_caution
from training.options import add_options, from_options

if TYPE_CHECKING:
    from training.pipeline import TrainResult


@dataclass(frozen=True)
class Rollout:
    """What to do with the chosen helper once trained."""

    install: str | None = field(
        default=None,
        metadata={
            "metavar": "PATH",
            "help": "point this symlink (e.g. escalator-data/helpers/current) at the first "
            "budget's selected helper, atomically; refused unless it beats never (and the "
            "helper installed there) beyond its uncertainty (default: install nothing)",
        },
    )
    force: bool = field(
        default=False,
        metadata={"help": "install even where the estimates do not show the helper is better"},
    )
    reload: tuple[str, ...] = field(
        default=(),
        metadata={
            "metavar": "URL",
            "help": "then ask this proxy to reload its helpers (repeat per replica; admin key "
            "from ESCALATOR_ADMIN_KEY; default: none)",
        },
    )

    def __post_init__(self) -> None:
        if self.reload and not self.install:
            raise ValueError("--reload needs --install (the proxies read the installed helper)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `escalator train`, generated from its two configurations."""
    add_options(parser.add_argument_group("training", TrainConfig.__doc__), TrainConfig)
    add_options(parser.add_argument_group("installing", Rollout.__doc__), Rollout)


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    from training.pipeline import train

    console = console or Console(stderr=True)
    try:
        config, rollout = from_options(TrainConfig, args), from_options(Rollout, args)
    except ValueError as exc:
        console.print(f"[red]escalator train:[/red] {exc}")
        return 2
    with progress_stages(console) as stage:
        try:
            result = train(config, stage)
        except DatasetError as exc:
            console.print(f"[red]escalator train: cannot train on {config.logs}:[/red] {exc}")
            return 1
    for line in result.summary.lines_of_text():
        console.print(line)
    console.print(selection_table(result))
    caution = crowding_caution(result.crowded)
    if caution is not None:
        console.print(f"[yellow]caution:[/yellow] {caution}")
    for budget in result.budgets:
        chosen = budget.selected.directory if budget.selected else budget.learned_dir
        console.print(f"C={budget.target:g}: helper {chosen}")
        if budget.usage_goal < budget.target:
            why = (
                "the agreement checks find no more worth making (where the base model would "
                "answer otherwise)"
                if budget.worth_making is not None
                else "past it, the estimates do no better than random escalation"
            )
            console.print(f"  judged at {budget.usage_goal:.2f} interventions per episode: {why}")
    console.print(f"report: {result.report}")
    if rollout.install:
        from training.rollout import RolloutError, install, reload

        chosen = result.selected.directory if result.selected else result.budgets[0].learned_dir
        if not _may_install(result, Path(rollout.install), rollout.force, console):
            return 3
        try:
            version = install(chosen, Path(rollout.install))
            console.print(f"installed {chosen} at {rollout.install} ({version})")
            for line in reload(list(rollout.reload), os.environ.get("ESCALATOR_ADMIN_KEY")):
                console.print(line)
        except (OSError, RolloutError) as exc:
            console.print(f"[red]escalator train: install failed:[/red] {exc}")
            return 1
    return 0


def selection_table(result: TrainResult) -> Table:
    """The chosen helper per target against the baselines at its usage (cross-fitted
    first-order doubly robust estimates over every session)."""
    table = Table(title="every logged session, cross-fitted (first-order doubly robust)")
    for column in ("policy", "success (95%)", "interventions/episode", "ESS", "support"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for budget in result.budgets:
        selected = budget.selected
        if selected is None:
            table.add_row(f"C={budget.target:g}: no candidate is estimable", "", "", "", "")
            continue
        for e in [selected.estimate, *selected.baselines]:
            name = f"C={budget.target:g} {e.policy}" if e is selected.estimate else f"  {e.policy}"
            figure = (
                f"{e.success:.3f} ± {1.96 * e.success_se:.3f}"
                if e.estimable
                else f"not estimable ({e.success:.3f})"
            )
            support = f"{e.support[0]}/{e.support[1]}" if e.usage else ""
            table.add_row(name, figure, f"{e.usage:.2f}", f"{e.ess:,.0f}", support)
    current = result.current
    table.add_row(current.policy, f"{current.success_dr:.3f}", f"{current.usage_dr:.2f}", "", "")
    return table


def _may_install(result: TrainResult, target: Path, force: bool, console: Console) -> bool:
    from training.gate import check, judge_installed
    from training.selection import paired_difference

    selected = result.selected
    if selected is None or result.dataset is None or result.evidence is None:
        verdict_ok, reasons = False, ["no candidate helper is estimable from these logs"]
    else:
        installed, flags, note = judge_installed(target, result.dataset, result.evidence)
        versus = (
            None if flags is None else paired_difference(result.evidence, selected.flags, flags)
        )
        verdict = check(selected.estimate, installed, note, selected.compared, versus)
        verdict_ok, reasons = verdict.install, verdict.reasons
    for reason in reasons:
        console.print(f"  {reason}")
    if verdict_ok:
        return True
    if force:
        console.print(
            "[bold yellow]escalator train: --force: installing a helper the estimates do "
            "not show to be better[/bold yellow]"
        )
        return True
    console.print(
        "[red]escalator train: not installed:[/red] the helper is not shown to be better "
        "(collect more sessions with exploration, or --force)"
    )
    return False


@contextmanager
def progress_stages(
    console: Console,
) -> Iterator[Callable[[str, int | None], Callable[[int], None]]]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    current: list[TaskID] = []

    def finish() -> None:
        # A stage without a known size shows as one unit of work, done when the next starts.
        for task in progress.tasks:
            if task.id in current:
                total = task.total or 1
                progress.update(task.id, total=total, completed=total)

    def stage(name: str, total: int | None) -> Callable[[int], None]:
        finish()
        task = progress.add_task(name, total=total)
        current[:] = [task]
        return lambda n: progress.advance(task, n)

    with progress:
        yield stage
        finish()
