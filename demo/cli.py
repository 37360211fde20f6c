"""`escalator demo`: arguments, the upstreams of the chosen world, progress, the table."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from demo.episodes import SimWorkload, Workload
from demo.loop import DemoConfig, DemoResult, DemoUpstreams, PolicyResult, run_demo
from demo.progress import Stage, line_stages
from training.cli import progress_stages

SIZES = {  # (collect, eval) tasks
    ("sim", True): (600, 300),
    ("sim", False): (4000, 2000),
    ("local", True): (160, 40),
    ("local", False): (300, 120),
}
# Each world's own defaults. Local tasks take one answer (a second after a format error):
# one intervention per session, aimed at half the episodes. Two episodes at once keep the
# two one-thread model servers busy (demo/local.py).
DEFAULTS = {
    "sim": {"budget": 2, "target": 1.0, "exploration": 0.3, "workers": 8},
    "local": {"budget": 1, "target": 0.5, "exploration": 0.3, "workers": 2},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--world",
        choices=["local", "sim"],
        default="local",
        help="local: reasoning-gym tasks on the local models (default); "
        "sim: the SIMULATED world on simulated upstreams (seconds, no models)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run (local: about 15 minutes on 2 cores)"
    )
    parser.add_argument(
        "--collect",
        type=int,
        help="tasks to collect with exploration (local: 160 quick, 300 full; sim: 600, 4000)",
    )
    parser.add_argument(
        "--eval",
        type=int,
        dest="eval_tasks",
        help="fresh tasks per policy (local: 40 quick, 120 full; sim: 300, 2000)",
    )
    parser.add_argument("--budget", type=int, help="interventions per session (sim: 2, local: 1)")
    parser.add_argument(
        "--target", type=float, help="interventions per episode (sim: 1.0, local: 0.5)"
    )
    parser.add_argument(
        "--exploration",
        type=float,
        help="the collecting tenant's share of steps escalated at random, with logged "
        "propensities (0.3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks and the training")
    parser.add_argument("--workers", type=int, help="episodes played at once (sim: 8, local: 2)")
    parser.add_argument(
        "--dir",
        help="where this run writes everything; it must hold no earlier run's step logs "
        "(default: a new escalator-demo/<world>-<date>-<time>/)",
    )


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or Console(stderr=True)
    collect, evaluate = SIZES[(args.world, args.quick)]
    defaults = DEFAULTS[args.world]
    directory = run_directory(args.dir, args.world)
    earlier = sorted((directory / "data" / "logs").glob("*.jsonl*"))
    if earlier:
        # Training reads every step log there: another run's episodes would train this
        # run's helper without a word.
        console.print(
            f"[red]escalator demo:[/red] {directory} already holds step logs of an earlier run "
            f"({len(earlier)} file(s) in data/logs); training would mix them in. Choose another "
            "--dir, or leave it out for a new one."
        )
        return 2
    console.print(f"this run writes to {directory}")
    config = DemoConfig(
        directory=directory,
        collect_tasks=args.collect or collect,
        eval_tasks=args.eval_tasks or evaluate,
        budget=_given(args.budget, defaults["budget"]),
        target=_given(args.target, defaults["target"]),
        exploration=_given(args.exploration, defaults["exploration"]),
        seed=args.seed,
        workers=_given(args.workers, defaults["workers"]),
    )
    from demo.local import DemoSetupError
    from demo.proxy import ProxyError

    try:
        with (
            _world(args.world, console, directory) as (workload, upstreams),
            _progress(console) as stage,
        ):
            result = run_demo(config, workload, upstreams, stage)
    except (DemoSetupError, ProxyError) as exc:
        console.print(f"[red]escalator demo:[/red] {exc}")
        return 1
    console.print(_table(result, workload.name))
    plot = config.directory / "demo.png"
    _plot(result, plot, workload.name)
    console.print(f"helper: {result.helper_dir}  training report: {result.training_report}")
    console.print(f"plot: {plot}")
    return 0


def _given(value: float | None, default: float) -> Any:
    return default if value is None else value


def run_directory(given: str | None, world: str) -> Path:
    """The run's own directory: the one given, or a new one under escalator-demo/."""
    if given is not None:
        return Path(given).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path("escalator-demo")
    root.mkdir(exist_ok=True)
    for attempt in range(1000):  # claimed by mkdir: two runs in one second get two
        directory = root / (f"{world}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        return directory.resolve()
    raise RuntimeError(f"no free run directory under {root} for {world}-{stamp}")


@contextmanager
def _progress(console: Console) -> Iterator[Stage]:
    """A live bar on a terminal; elsewhere (a file, a pipe) a line per stage and every ten
    tasks, so a run's log shows where it is."""
    if console.is_terminal:
        with progress_stages(console) as stage:
            yield stage
        return
    stage, finish = line_stages(
        lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
    )
    try:
        yield stage
    finally:
        finish()


@contextmanager
def _world(
    world: str, console: Console, directory: Path
) -> Iterator[tuple[Workload, DemoUpstreams]]:
    if world == "sim":
        from demo.sim.upstream import SimUpstream

        upstream = SimUpstream().start()
        try:
            yield (
                SimWorkload(),
                DemoUpstreams(
                    {"base_url": upstream.base_url},
                    "sim-weak",
                    {"base_url": upstream.base_url},
                    "sim-strong",
                ),
            )
        finally:
            upstream.stop()
        return
    from demo.local import local_world

    with local_world(console, directory) as pair:
        yield pair


def _table(result: DemoResult, world: str) -> Table:
    table = Table(title=f"{world}: success on fresh tasks (95% Wilson interval)")
    for column in ("policy", "success", "95% CI", "interventions/episode", "steps", "tasks"):
        table.add_column(column, justify="left" if column == "policy" else "right")

    def row(r: PolicyResult) -> None:
        low, high = r.wilson()
        table.add_row(
            r.name,
            f"{r.success:.3f}",
            f"{low:.2f}-{high:.2f}",
            f"{r.interventions:.2f}",
            f"{r.steps:.1f}",
            str(r.n),
        )

    for r in result.baselines:
        row(r)
    table.add_section()
    for r in result.compared:
        row(r)
    return table


def _plot(result: DemoResult, path: Path, world: str) -> None:
    """Success against interventions per episode: one labelled point per policy with its
    95% Wilson interval. The strong model alone spends no budget (it is the base there), so
    it stands at the model calls it makes per episode, each of which is a strong call."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r, r.steps if r.name == "strong only" else r.interventions) for r in result.all]
    right = max(max(x for _, x in points), 0.5) * 1.5 + 0.05
    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    placed: list[tuple[float, float]] = []
    for i, (r, x) in enumerate(sorted(points, key=lambda p: (p[1], -p[0].success))):
        low, high = r.wilson()
        colour = f"C{i}"
        ax.errorbar(
            x,
            r.success,
            yerr=[[r.success - low], [high - r.success]],
            fmt="o",
            ms=7,
            capsize=4,
            color=colour,
        )
        name = "strong only\n(x: strong calls)" if r.name == "strong only" else r.name
        ax.annotate(
            f"{name}: {r.success:.0%}",
            (x, r.success),
            xytext=(x + right * 0.03, _free_height(r.success, x, placed, right * 0.2)),
            fontsize=8,
            color=colour,
            va="center",
            arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6},
        )
    ax.set_xlim(-0.05, right)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("interventions per episode")
    ax.set_ylabel("success rate")
    n = ", ".join(sorted({str(r.n) for r, _ in points}))
    ax.set_title(
        f"Success on fresh tasks, 95% Wilson intervals, {n} tasks per policy\n{world}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _free_height(y: float, x: float, placed: list[tuple[float, float]], near: float) -> float:
    """A height for a label at `x` near `y` that keeps clear of labels already placed close
    by (points of equal usage would otherwise print over each other)."""
    gap = 0.075
    for step in range(40):
        candidate = y + (step + 1) // 2 * gap * (1 if step % 2 else -1)
        clear = all(abs(candidate - py) >= gap or abs(x - px) > near for px, py in placed)
        if clear and 0.03 <= candidate <= 0.99:
            placed.append((x, candidate))
            return candidate
    placed.append((x, y))
    return y
