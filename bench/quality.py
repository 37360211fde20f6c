"""Decision quality of the trained helper on worlds unlike the project's own simulator.

    python bench/quality.py                      # every world, both modes, 3 runs
    python bench/quality.py --quick              # one run, 100 fresh episodes per policy
    python bench/quality.py --world textgame --mode steps --runs 5 --json out.json

Per world (demo/worlds/: textgame, gridtext, dataagent, reasoning) and mode (`outcome`:
only the session outcomes are reported; `steps`: the environment's step rewards too, as
feedback records), each run does, in-process (with `--through-proxy`, stages 1-3 and the helper's
episodes go through a real `escalator serve` instead: see below):

1. Collect: `--collect` episodes (240) as a tenant with exploration ε (0.3) on the `never`
   policy, hard budget C (4), into a temporary log directory in the proxy's format.
2. Train: `training.pipeline.train` with one usage target (`--usage`, default C, as
   `escalator train --budget C` does: the trainer spends fewer where its agreement checks
   find no more worth making), cap C, the trainer's default hashed embedding.
3. Serve: the helper the trainer chose (its `selected` artifact, else the DP-imitating
   `learned` one), loaded through `router.policies.build_policy` as the proxy loads it.
4. Compare on `--episodes` fresh episodes (another seed), played online: never, always,
   the oracle at C (escalates exactly at the hidden hard steps while budget lasts), and,
   each with its knob bisected until its realised usage matches the helper's, random, the
   PRM threshold and the oracle escalating at a random share of the hard steps; then the
   helper.

Printed per run: success with its 95% Wilson interval, escalations per episode, the share
of escalations at hidden hard steps, the share of the oracle's gain the helper recovers,
(helper - never) / (oracle - never), against the oracle at C and at equal usage, and the
helper's realised usage and success against the trainer's predictions; then the means over
runs (intervals over the pooled episodes).

    python bench/quality.py --quick --through-proxy --world textgame --mode steps

`--through-proxy` runs the loop as a user would (bench/quality_proxy.py): the proxy in a
child process on a free port in front of a simulated upstream, the episodes played as
sessions over HTTP (`--concurrency` at once; step rewards to the feedback endpoint, the
outcome to the outcome endpoint), `escalator train --install` on the proxy's own step log
(a gate refusal is printed, then overridden with `--force`), the proxy restarted on the
installed helper, and the helper's fresh episodes played through it. The baselines stay
in-process (they need no proxy), and so does a second run of the same helper, `helper
(in-process)`, which should agree with the proxy's row. Also printed: the gate's verdict,
how the proxy decided the steps (from its step log), and wall times per stage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.quality_proxy import Served, helper_through_proxy  # noqa: E402
from demo.worlds import NAMES, make_world  # noqa: E402
from demo.worlds.base import (  # noqa: E402
    Behaviour,
    Oracle,
    World,
    evaluate,
    oracle_behaviour,
    policy_behaviour,
    random_behaviour,
    write_logs,
)
from router.policies import PolicyContext, build_policy  # noqa: E402

CONTEXT = PolicyContext("agent", "strong")
MODES = ("outcome", "steps")


@dataclass(frozen=True)
class QualityConfig:
    worlds: tuple[str, ...] = NAMES
    modes: tuple[str, ...] = MODES
    collect: int = 240  # logged episodes to train on
    exploration: float = 0.3
    cap: int = 4  # the hard per-session budget C
    usage: float | None = None  # the trainer's usage target (default: the cap C)
    episodes: int = 200  # fresh episodes per policy
    runs: int = 3
    seed: int = 0
    bisect_steps: int = 8  # bisection steps matching a baseline's usage to the helper's
    through_proxy: bool = False  # stages 1-3 and the helper's episodes through `escalator serve`
    concurrency: int = 12  # sessions in flight at once through the proxy
    embedding: str = "hashed"  # the trainer's state embedding: hashed | minilm | none

    @property
    def target(self) -> float:
        """The trainer's usage target: `usage`, else the cap."""
        return float(self.cap) if self.usage is None else self.usage


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def chosen_helper(result: Any) -> tuple[Path, str, float, float]:
    """The artifact the trainer chose, its candidate's name, predicted usage and success."""
    selected = getattr(result, "selected", None)
    if selected is not None:
        return (
            Path(selected.directory),
            str(getattr(selected, "name", "selected")),
            float(selected.predicted_usage),
            float(selected.predicted_success),
        )
    budget = result.budgets[0]
    solution = budget.solution
    return Path(budget.learned_dir), "learned (DP)", float(solution.usage), float(solution.success)


def artifact_policy(directory: Path) -> tuple[Behaviour, str]:
    """The artifact's policy as the proxy builds it, and the artifact's kind."""
    kind = str(json.loads((directory / "helper.json").read_text())["kind"])
    spec = {"kind": kind, "artifact": str(directory)}
    return policy_behaviour(build_policy(spec, CONTEXT)), kind


def matched(
    make: Callable[[float], Behaviour | Oracle],
    target: float,
    increasing: bool,
    measure: Callable[[Behaviour | Oracle], dict[str, float]],
    steps: int,
) -> tuple[float, dict[str, float]]:
    """Bisect a knob in [0, 1] until the behaviour's realised usage is nearest `target`."""
    low, high = 0.0, 1.0
    best: tuple[float, float, dict[str, float]] | None = None
    for _ in range(steps):
        knob = (low + high) / 2
        figures = measure(make(knob))
        gap = abs(figures["interventions"] - target)
        if best is None or gap < best[0]:
            best = (gap, knob, figures)
        if (figures["interventions"] < target) == increasing:
            low = knob
        else:
            high = knob
    assert best is not None
    return best[1], best[2]


def serve_in_process(
    world: World[Any], mode: str, seed: int, fresh: int, tmp: Path, config: QualityConfig
) -> Served:
    """Stages 1-3 in this process, and the helper on the fresh episodes."""
    from training.pipeline import TrainConfig, train

    started = time.perf_counter()
    logs, out = tmp / "logs", tmp / "out"
    write_logs(
        logs,
        world,
        config.collect,
        seed=seed,
        budget=config.cap,
        exploration=config.exploration,
        step_rewards=mode == "steps",
    )
    collected = time.perf_counter()
    result = train(
        TrainConfig(
            logs=str(logs),
            out=str(out),
            budgets=(config.target,),
            cap=config.cap,
            seed=seed,
            embedding=config.embedding,
        )
    )
    trained = time.perf_counter()
    directory, candidate, predicted_usage, predicted_success = chosen_helper(result)
    helper, kind = artifact_policy(directory)
    figures = {"helper": evaluate(world, helper, config.episodes, fresh, config.cap)}
    selected = getattr(result, "selected", None)
    interval = selected.estimate.interval() if selected is not None else (math.nan, math.nan)
    return Served(
        predicted_interval=interval,
        directory=directory,
        figures=figures,
        candidate=candidate,
        kind=kind,
        predicted_usage=predicted_usage,
        predicted_success=predicted_success,
        table_dir=result.budgets[0].table_dir,
        seconds={
            "collect": round(collected - started, 1),
            "train": round(trained - collected, 1),
            "helper": round(time.perf_counter() - trained, 1),
        },
    )


def run_once(
    name: str, world: World[Any], mode: str, seed: int, config: QualityConfig
) -> dict[str, Any]:
    fresh = seed + 100_003
    with tempfile.TemporaryDirectory(prefix="escalator-quality-") as tmp:
        if config.through_proxy:
            served = helper_through_proxy(world, mode == "steps", seed, fresh, Path(tmp), config)
        else:
            served = serve_in_process(world, mode, seed, fresh, Path(tmp), config)
        started = time.perf_counter()

        def measure(behaviour: Behaviour | Oracle) -> dict[str, float]:
            return evaluate(world, behaviour, config.episodes, fresh, config.cap)

        def policy(spec: dict[str, Any]) -> Behaviour:
            return policy_behaviour(build_policy(spec, CONTEXT))

        figures: dict[str, dict[str, float]] = {
            "never": measure(policy({"kind": "never"})),
            "always": measure(policy({"kind": "always"})),
            f"oracle (C={config.cap})": measure(oracle_behaviour()),
            **served.figures,
        }
        if config.through_proxy:  # the same helper without the proxy: the rows should agree
            figures["helper (in-process)"] = measure(artifact_policy(served.directory)[0])
        usage = figures["helper"]["interventions"]
        knobs: dict[str, float] = {}
        p, figures["random (matched)"] = matched(
            random_behaviour, usage, True, measure, config.bisect_steps
        )
        knobs["random (matched)"] = p
        share, figures["oracle (matched)"] = matched(
            oracle_behaviour, usage, True, measure, config.bisect_steps
        )
        knobs["oracle (matched)"] = share
        if served.table_dir is not None:
            prm = str(served.table_dir)
            tau, figures["PRM threshold (matched)"] = matched(
                lambda t: policy({"kind": "threshold", "threshold": t, "prm": prm}),
                usage,
                False,
                measure,
                config.bisect_steps,
            )
            knobs["PRM threshold (matched)"] = tau
    never = figures["never"]["success"]
    oracle = figures[f"oracle (C={config.cap})"]["success"]
    gain = _share(figures["helper"]["success"] - never, oracle - never)
    at_usage = _share(
        figures["helper"]["success"] - never, figures["oracle (matched)"]["success"] - never
    )
    return {
        "world": name,
        "mode": mode,
        "seed": seed,
        "through_proxy": config.through_proxy,
        "candidate": served.candidate,
        "artifact_kind": served.kind,
        "predicted_usage": served.predicted_usage,
        "predicted_success": served.predicted_success,
        "predicted_interval": list(served.predicted_interval),
        "policies": figures,
        "knobs": knobs,
        "gain_recovered": gain,
        "gain_recovered_at_usage": at_usage,
        "gate_accepted": served.gate_accepted,
        "notes": served.notes,
        "seconds": {**served.seconds, "evaluate": round(time.perf_counter() - started, 1)},
    }


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


def _ratio(helper: dict[str, float], run: dict[str, Any]) -> str:
    """The helper's usage as a multiple of the oracle's at C."""
    policies: dict[str, dict[str, float]] = run["policies"]
    oracle = next((f for name, f in policies.items() if name.startswith("oracle (C")), {})
    used = oracle.get("interventions", 0.0)
    return f"{helper['interventions'] / used:.2f} times" if used else "n/a times"


def print_run(run: dict[str, Any], label: str) -> None:
    print(f"\n{run['world']} / {run['mode']} — {label}: helper {run['candidate']!r}")
    print(f"  {'policy':<26}{'success':>8}  {'95% interval':<15}{'esc/ep':>7}{'at hard':>9}")
    for name, f in run["policies"].items():
        shown = "helper (through proxy)" if name == "helper" and run.get("through_proxy") else name
        n = f.get("episodes", 0.0)
        lo, hi = wilson(f["success"] * n, n) if n else (math.nan, math.nan)
        knob = run["knobs"].get(name)
        letter = "p" if "random" in name else "share" if "oracle" in name else "τ"
        extra = f"   ({letter}={knob:.3f})" if knob is not None else ""
        at_hard = f"{f['at_hard']:.2f}" if f["interventions"] else "-"
        print(
            f"  {shown:<26}{f['success']:>8.3f}  [{lo:.3f}, {hi:.3f}] "
            f"{f['interventions']:>7.2f}{at_hard:>9}{extra}"
        )
    helper = run["policies"]["helper"]
    print(
        f"  oracle's gain recovered by the helper: {run['gain_recovered']:.2f} "
        f"(at equal usage {run['gain_recovered_at_usage']:.2f}); "
        f"usage {helper['interventions']:.2f} ({_ratio(helper, run)} the oracle's; trainer "
        f"predicted {run['predicted_usage']:.2f}), "
        f"success {helper['success']:.3f} (predicted {run['predicted_success']:.3f})"
    )
    low, high = run.get("predicted_interval", (math.nan, math.nan))
    if not math.isnan(low):
        inside = "inside" if low <= helper["success"] <= high else "OUTSIDE"
        print(f"  the trainer's 95% interval [{low:.3f}, {high:.3f}]: measured success {inside}")
        # The measured figure has its own noise (a few hundred episodes): the prediction and
        # it agree when their difference is within both uncertainties together.
        p, n = helper["success"], helper.get("episodes", 0.0)
        if n:
            bound = 1.96 * math.hypot((high - low) / 3.92, math.sqrt(p * (1 - p) / n))
            gap = p - run["predicted_success"]
            verdict = "consistent" if abs(gap) <= bound else "NOT consistent"
            print(f"  measured - predicted {gap:+.3f}, 95% bound of both ±{bound:.3f}: {verdict}")
    for note in run.get("notes", []):
        print(f"  {note}")
    if "seconds" in run:
        print("  seconds: " + ", ".join(f"{k} {v}" for k, v in run["seconds"].items()))


def mean_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def avg(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else math.nan

    names = [n for n in runs[0]["policies"] if all(n in r["policies"] for r in runs)]
    policies = {
        n: {
            k: avg([r["policies"][n][k] for r in runs]) * (len(runs) if k == "episodes" else 1)
            for k in runs[0]["policies"][n]
        }
        for n in names
    }
    gates = [r["gate_accepted"] for r in runs if r.get("gate_accepted") is not None]
    return {
        "world": runs[0]["world"],
        "mode": runs[0]["mode"],
        "through_proxy": runs[0].get("through_proxy", False),
        "notes": [f"gate accepted {sum(gates)} of {len(gates)} helpers"] if gates else [],
        "candidate": ", ".join(sorted({r["candidate"] for r in runs})),
        "predicted_usage": avg([r["predicted_usage"] for r in runs]),
        "predicted_success": avg([r["predicted_success"] for r in runs]),
        "policies": policies,
        "knobs": {},
        "gain_recovered": avg([r["gain_recovered"] for r in runs]),
        "gain_recovered_at_usage": avg([r["gain_recovered_at_usage"] for r in runs]),
    }


def parse(argv: list[str] | None = None) -> tuple[QualityConfig, str | None]:
    default = QualityConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", action="append", choices=NAMES, help="repeat; default all")
    parser.add_argument("--mode", action="append", choices=MODES, help="repeat; default both")
    parser.add_argument("--collect", type=int, default=default.collect, help="logged episodes")
    parser.add_argument("--exploration", type=float, default=default.exploration)
    parser.add_argument("--cap", type=int, default=default.cap, help="hard budget C")
    parser.add_argument("--usage", type=float, help="the trainer's usage target (default: C)")
    parser.add_argument(
        "--episodes", type=int, help=f"fresh episodes per policy ({default.episodes})"
    )
    parser.add_argument("--runs", type=int, help=f"runs with different seeds ({default.runs})")
    parser.add_argument("--seed", type=int, default=default.seed, help="first run's seed")
    parser.add_argument("--quick", action="store_true", help="one run, 100 fresh episodes")
    parser.add_argument("--json", metavar="OUT", help="write every figure to this file")
    parser.add_argument(
        "--through-proxy",
        action="store_true",
        help="collect, train (the CLI) and serve the helper through a real `escalator serve`",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=default.concurrency,
        help="sessions in flight at once through the proxy",
    )
    parser.add_argument(
        "--embedding",
        choices=["hashed", "minilm", "none"],
        default=default.embedding,
        help="the trainer's state embedding (minilm needs the `embed` extra)",
    )
    args = parser.parse_args(argv)
    config = QualityConfig(
        worlds=tuple(args.world or NAMES),
        modes=tuple(args.mode or MODES),
        collect=args.collect,
        exploration=args.exploration,
        cap=args.cap,
        usage=args.usage,
        episodes=args.episodes or (100 if args.quick else default.episodes),
        runs=args.runs or (1 if args.quick else default.runs),
        seed=args.seed,
        bisect_steps=6 if args.quick else default.bisect_steps,
        through_proxy=args.through_proxy,
        concurrency=args.concurrency,
        embedding=args.embedding,
    )
    return config, args.json


def main(argv: list[str] | None = None) -> int:
    config, json_out = parse(argv)
    print(f"config: {asdict(config)}")
    results: list[dict[str, Any]] = []
    means: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in config.worlds:
        try:
            world = make_world(name)
        except ImportError as exc:
            skipped[name] = str(exc)
            print(f"\nskipping world {name}: {exc}")
            continue
        for mode in config.modes:
            runs = []
            for r in range(config.runs):
                seed = config.seed + 1000 * r
                run = run_once(name, world, mode, seed, config)
                print_run(run, f"run {r + 1} of {config.runs} (seed {seed})")
                runs.append(run)
            results.extend(runs)
            if len(runs) > 1:
                mean = mean_run(runs)
                print_run(mean, f"mean of {len(runs)} runs")
                means.append(mean)
    if json_out:
        payload = {"config": asdict(config), "runs": results, "means": means, "skipped": skipped}
        Path(json_out).write_text(json.dumps(payload, indent=2, default=float) + "\n")
        print(f"\nfigures written to {json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
