"""`escalator train`: arguments, progress bars, and the closing table."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

from training.dataset import DatasetError

if TYPE_CHECKING:
    from training.pipeline import TrainResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", required=True, help="directory of step-log segments")
    parser.add_argument("--out", required=True, help="directory for the helpers and the report")
    parser.add_argument(
        "--budget",
        type=float,
        action="append",
        dest="budgets",
        metavar="C",
        help="target interventions per episode (repeat for several; default 1..cap)",
    )
    parser.add_argument(
        "--cap", type=int, help="hard per-session budget (default: the logged sessions' budget)"
    )
    parser.add_argument(
        "--target-rate", type=float, help="calibrate the helper to escalate on this share of steps"
    )
    parser.add_argument("--route", help="train on this route's steps only")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the folds, the hold-out and every fit"
    )
    parser.add_argument(
        "--embedding",
        choices=["hashed", "minilm", "none"],
        default="hashed",
        help="the state's text as the helper reads it: hashed n-grams (no extra), MiniLM "
        "(the `embed` extra; slower to serve, not better on the quality benchmark), or none",
    )
    parser.add_argument(
        "--prm",
        choices=["linear", "transformers", "judge"],
        default="linear",
        help="the process reward model: a linear model on the logged states, a transformers "
        "model (the `prm` extra, --prm-model), or an LLM judge (--judge-endpoint)",
    )
    parser.add_argument("--prm-model", help="transformers PRM: a local model directory")
    parser.add_argument("--judge-endpoint", help="judge PRM: OpenAI-compatible base URL")
    parser.add_argument("--judge-model", help="judge PRM: the model to ask")
    parser.add_argument("--bins", type=int, default=10, help="PRM score bins of the MDP")
    parser.add_argument("--holdout", type=float, default=0.2, help="share of held-out sessions")
    parser.add_argument(
        "--install",
        metavar="PATH",
        help="point this symlink (e.g. escalator-data/helpers/current) at the first "
        "budget's selected helper, atomically; refused unless it beats never (and the helper "
        "installed there) beyond its uncertainty",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="install even where the estimates do not show the helper is better",
    )
    parser.add_argument(
        "--reload",
        metavar="URL",
        action="append",
        default=[],
        help="then ask this proxy to reload its helpers (repeat per replica; admin key "
        "from ESCALATOR_ADMIN_KEY)",
    )


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    from training.pipeline import TrainConfig, train

    console = console or Console(stderr=True)
    problems = _check(args)
    if problems:
        console.print(f"[red]escalator train:[/red] {problems}")
        return 2
    config = TrainConfig(
        logs=args.logs,
        out=args.out,
        budgets=tuple(args.budgets or ()),
        cap=args.cap,
        target_rate=args.target_rate,
        route=args.route,
        seed=args.seed,
        embedding=args.embedding,
        prm=args.prm,
        prm_model=args.prm_model,
        judge_endpoint=args.judge_endpoint,
        judge_model=args.judge_model,
        bins=args.bins,
        holdout=args.holdout,
    )
    with progress_stages(console) as stage:
        try:
            result = train(config, stage)
        except DatasetError as exc:
            console.print(f"[red]escalator train: cannot train on {args.logs}:[/red] {exc}")
            return 1
    for line in result.summary.lines_of_text():
        console.print(line)
    console.print(selection_table(result))
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
    if args.install:
        from training.rollout import RolloutError, install, reload

        chosen = result.selected.directory if result.selected else result.budgets[0].learned_dir
        if not _may_install(result, Path(args.install), args.force, console):
            return 3
        try:
            version = install(chosen, Path(args.install))
            console.print(f"installed {chosen} at {args.install} ({version})")
            for line in reload(args.reload, os.environ.get("ESCALATOR_ADMIN_KEY")):
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


def _check(args: argparse.Namespace) -> str | None:
    if args.budgets and any(c <= 0 for c in args.budgets):
        return "--budget must be positive"
    if args.cap is not None and args.cap < 1:
        return "--cap must be at least 1"
    if args.target_rate is not None and not 0 < args.target_rate < 1:
        return "--target-rate must be between 0 and 1"
    if not 0 < args.holdout < 1:
        return "--holdout must be between 0 and 1"
    if args.prm == "judge" and not (args.judge_endpoint and args.judge_model):
        return "--prm judge needs --judge-endpoint and --judge-model"
    if args.reload and not args.install:
        return "--reload needs --install (the proxies read the installed helper)"
    if args.prm == "transformers" and not args.prm_model:
        return "--prm transformers needs --prm-model (a local model directory)"
    return None


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
