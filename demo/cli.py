"""`escalator demo`: arguments, the upstreams of the chosen world, progress, the table."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from demo.episodes import SimWorkload, Workload
from demo.loop import DemoConfig, DemoResult, DemoUpstreams, PolicyResult, run_demo
from training.cli import progress_stages

SIZES = {  # (collect, eval) tasks
    ("sim", True): (600, 300),
    ("sim", False): (4000, 2000),
    ("local", True): (20, 6),
    ("local", False): (300, 100),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--world",
        choices=["local", "sim"],
        default="local",
        help="local: reasoning-gym tasks on the local models (default); "
        "sim: the SIMULATED world on simulated upstreams (seconds, no models)",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (about 10 minutes)")
    parser.add_argument("--collect", type=int, help="tasks to collect with exploration")
    parser.add_argument("--eval", type=int, dest="eval_tasks", help="fresh tasks per policy")
    parser.add_argument("--budget", type=int, default=2, help="interventions per session")
    parser.add_argument("--target", type=float, default=1.0, help="interventions per episode")
    parser.add_argument(
        "--exploration",
        type=float,
        default=0.3,
        help="the collecting tenant's share of steps escalated at random (logged propensities)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks and the training")
    parser.add_argument("--workers", type=int, help="episodes played at once")
    parser.add_argument(
        "--dir",
        help="where this run writes everything; it must hold no earlier run's step logs "
        "(default: a new escalator-demo/<world>-<date>-<time>/)",
    )


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or Console(stderr=True)
    collect, evaluate = SIZES[(args.world, args.quick)]
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
        budget=args.budget,
        target=args.target,
        exploration=args.exploration,
        seed=args.seed,
        workers=args.workers or (8 if args.world == "sim" else 1),
    )
    from demo.local import DemoSetupError
    from demo.proxy import ProxyError

    try:
        with (
            _world(args.world, console) as (workload, upstreams),
            progress_stages(console) as stage,
        ):
            result = run_demo(config, workload, upstreams, stage)
    except (DemoSetupError, ProxyError) as exc:
        console.print(f"[red]escalator demo:[/red] {exc}")
        return 1
    console.print(_table(result, workload.name))
    plot = config.directory / "demo.png"
    _plot(result, plot)
    console.print(f"helper: {result.helper_dir}  training report: {result.training_report}")
    console.print(f"plot: {plot}")
    return 0


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
def _world(world: str, console: Console) -> Iterator[tuple[Workload, DemoUpstreams]]:
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

    with local_world(console) as pair:
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


def _plot(result: DemoResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for r in result.compared:
        low, high = r.wilson()
        ax.errorbar(
            r.interventions,
            r.success,
            yerr=[[r.success - low], [high - r.success]],
            fmt="o",
            capsize=3,
            label=r.name,
        )
    for r in result.baselines:
        ax.axhline(r.success, ls="--", lw=1, color="grey")
        ax.annotate(r.name, (0, r.success), fontsize=8, va="bottom")
    ax.set_xlabel("interventions per episode")
    ax.set_ylabel("success rate")
    ax.set_title("Trained helper vs baselines, fresh tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
