"""Training speed: the whole `escalator train` pipeline on generated step logs, and the DP.

    python bench/training.py                       # 10k, 100k and 1M logged steps
    python bench/training.py --steps 10000 --dp-only

Logs come from the simulated world (demo/sim/world.py) with content captured, as a
tenant with capture_content writes them; generating them is not timed. Each size runs
`escalator train` in its own process (so peak memory is that run's alone), pinned to the
machine's two cores, with the default hashed embedding and one target budget per
intervention of the cap (3). Peak memory is the child's maximum resident set size.

The DP figure is the λ search for 50 target budgets (C = 1..50) under a cap of 50, on a
10-bin MDP estimated from the generated logs: 50 policy tables.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS_PER_SESSION = 4.75  # measured mean of the simulated world's episodes


def generate(directory: Path, steps: int) -> int:
    from demo.sim.world import write_logs

    sessions = int(steps / STEPS_PER_SESSION)
    return write_logs(directory, sessions, seed=11, budget=3, segment_sessions=20_000)


def run_train(logs: Path, out: Path) -> dict[str, float]:
    code = (
        "import json, resource, sys, time\n"
        "from training.pipeline import TrainConfig, train\n"
        "t = time.perf_counter()\n"
        f"r = train(TrainConfig(logs={str(logs)!r}, out={str(out)!r}))\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'wall_s': wall, 'peak_mb': peak, 'stages': r.timing,"
        " 'steps': r.summary.steps_used}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_mb_with_workers"] = max(children, result["peak_mb"])
    return result


def bench_dp(logs: Path) -> dict[str, float]:
    import numpy as np

    from training import dp
    from training.dataset import load_dataset
    from training.mdp import assign_bins, estimate_mdp, score_edges

    data, _ = load_dataset(logs)
    # A stand-in score (no PRM fit needed here): the logged step's tool-error flag and step.
    score = 1.0 / (1.0 + data.features[:, 6] + 0.1 * data.features[:, 0])
    edges = score_edges(score, 10)
    bins = assign_bins(score, edges)
    leaf = np.full((2, len(edges) - 1), float(data.success.mean()))
    mdp = estimate_mdp(bins, data.action, data.start, data.success, leaf, edges)
    t = time.perf_counter()
    solutions = [dp.search_penalty(mdp, 50, float(c)) for c in range(1, 51)]
    wall = time.perf_counter() - t
    t = time.perf_counter()
    dp.solve(mdp, 50, 0.01)
    one = time.perf_counter() - t
    return {
        "dp_50_budgets_s": wall,
        "dp_one_solve_ms": one * 1000,
        "tables": len(solutions),
        "bins": mdp.n_bins,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dp-only", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            logs = Path(tmp) / f"logs-{steps}"
            t = time.perf_counter()
            written = generate(logs, steps)
            size = sum(p.stat().st_size for p in logs.iterdir()) / 1e6
            took = time.perf_counter() - t
            print(f"generated {written:,} steps ({size:,.0f} MB) in {took:.0f} s")
            row: dict[str, object] = {"steps": written, "log_mb": round(size)}
            if not args.dp_only:
                row.update(run_train(logs, Path(tmp) / f"out-{steps}"))
            if steps == args.steps[-1]:
                row.update(bench_dp(logs))
            print(json.dumps(row))
            rows.append(row)
    print("\n| logged steps | log MB | wall s | peak MB | stages (s) |")
    print("|---:|---:|---:|---:|---|")
    for row in rows:
        stages = row.get("stages") or {}
        print(
            f"| {row['steps']:,} | {row['log_mb']} | {row.get('wall_s', float('nan')):.1f} | "
            f"{row.get('peak_mb', float('nan')):,.0f} | "
            + ", ".join(f"{k} {v:g}" for k, v in stages.items() if k != "total")  # type: ignore[union-attr]
            + " |"
        )
    last = rows[-1]
    if "dp_50_budgets_s" in last:
        print(
            f"\nDP, 50 target budgets under a cap of 50 ({last['bins']} bins): "
            f"{last['dp_50_budgets_s']:.3f} s; one solve {last['dp_one_solve_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
