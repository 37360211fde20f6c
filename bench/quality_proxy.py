"""`bench/quality.py --through-proxy`: collect, train and serve the helper through a real
`escalator serve` on 127.0.0.1, as a user would (demo/worlds/proxy_driver.py drives it).

1. Collect: `collect` episodes through the proxy, route `agent` on policy `never`, the
   tenant exploring at ε under budget C; in `steps` mode the step rewards go to the
   feedback endpoint. The proxy is stopped, which flushes its step log.
2. Train: `escalator train --logs <storage>/logs --out <dir> --budget <usage> --cap C
   --install <storage>/helpers/current` in a subprocess. Exit 3 is the gate refusing (the
   helper is not shown better than `never` beyond its uncertainty): a finding, reported;
   the run goes on with `--force`, which trains again and installs.
3. Serve: the proxy restarted with the route's policy `learned` on the installed helper and
   exploration 0 (a route's policy is configuration: reloading re-reads artifacts only);
   POST /admin/helpers/reload then names the helper the proxy holds.
4. Evaluate: the fresh episodes through the proxy under the helper; the step log says which
   policy decided them. The baselines stay in-process (bench/quality.py): they need no proxy.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from demo.worlds.base import World
from demo.worlds.proxy_driver import NEVER, ProxyDriver

GATE_REFUSED = 3  # `escalator train --install`: not shown better, not installed


class LoopConfig(Protocol):
    @property
    def collect(self) -> int: ...
    @property
    def exploration(self) -> float: ...
    @property
    def cap(self) -> int: ...
    @property
    def usage(self) -> float: ...
    @property
    def episodes(self) -> int: ...
    @property
    def concurrency(self) -> int: ...


@dataclass(frozen=True)
class Served:
    """The trained helper and its figures on the fresh episodes, however it was served."""

    directory: Path  # the helper's artifact
    figures: dict[str, dict[str, float]]  # table rows: "helper"
    candidate: str
    kind: str
    predicted_usage: float
    predicted_success: float
    table_dir: Path | None  # the DP table artifact, whose PRM the threshold baseline reads
    seconds: dict[str, float]
    gate_accepted: bool | None = None  # None: no gate (in-process)
    notes: list[str] = field(default_factory=list)
    predicted_interval: tuple[float, float] = (math.nan, math.nan)  # success, 95%


@dataclass(frozen=True)
class Trained:
    """What `escalator train` installed, read back from the artifact it wrote."""

    accepted: bool  # the gate installed it without --force
    verdict: list[str]  # the gate's reasons as the trainer printed them
    directory: Path
    kind: str
    candidate: str
    predicted_usage: float
    predicted_success: float
    table_dir: Path | None


def helper_through_proxy(
    world: World[Any], step_rewards: bool, seed: int, fresh: int, tmp: Path, config: LoopConfig
) -> Served:
    clock = _Clock()
    with ProxyDriver(tmp, config.cap, config.concurrency) as driver:
        driver.serve(NEVER, config.exploration)
        driver.play(world, config.collect, seed, "collect", step_rewards)
        driver.stop()
        collected = driver.decisions(f"{world.name}-collect-")
        clock.lap("collect")
        trained = train_with_cli(driver, tmp / "out", config.target, seed, config.embedding)
        clock.lap("train")
        proxy = driver.serve({"kind": trained.kind, "artifact": str(driver.installed)}, 0.0)
        loaded = driver.reload()
        clock.lap("serve")
        helper = driver.play(world, config.episodes, fresh, "helper")
        driver.stop()
        decided = driver.decisions(f"{world.name}-helper-")
        clock.lap("helper")
    gate = "accepted" if trained.accepted else "REFUSED (exit 3): installed with --force"
    notes = [
        f"collected through the proxy: {sum(n for k, n in collected.items() if ' / ' in k)} "
        "steps, decided " + ", ".join(f"{k}: {v}" for k, v in collected.most_common()),
        f"gate {gate}: " + "; ".join(trained.verdict),
        f"helper served by `escalator serve` at {proxy.url}: reload says {', '.join(loaded)}; "
        "its steps decided " + ", ".join(f"{k}: {v}" for k, v in decided.most_common()),
        "the helper row comes through the proxy; every other row is played in-process, "
        "as without --through-proxy (a baseline needs no proxy)",
    ]
    return Served(
        directory=trained.directory,
        figures={"helper": helper},
        candidate=trained.candidate,
        kind=trained.kind,
        predicted_usage=trained.predicted_usage,
        predicted_success=trained.predicted_success,
        table_dir=trained.table_dir,
        seconds=clock.laps,
        gate_accepted=trained.accepted,
        notes=notes,
    )


def train_with_cli(
    driver: ProxyDriver, out: Path, usage: float, seed: int, embedding: str
) -> Trained:
    """`escalator train ... --install`, again with `--force` when the gate refuses."""
    command = [
        *(sys.executable, "-m", "escalator", "train", "--logs", str(driver.logs)),
        *("--out", str(out), "--budget", f"{usage:g}", "--cap", str(driver.cap)),
        *("--seed", str(seed), "--install", str(driver.installed)),
        *("--embedding", embedding),
    ]
    done = _run(command)
    accepted, verdict = done.returncode == 0, _verdict(done.stdout)
    if done.returncode == GATE_REFUSED:
        print(f"  the gate refused the helper (exit 3): {'; '.join(verdict)}; again with --force")
        done = _run([*command, "--force"])
    if done.returncode != 0:
        raise RuntimeError(f"escalator train exited {done.returncode}:\n{done.stdout[-4000:]}")
    directory = driver.installed.resolve()
    spec = json.loads((directory / "helper.json").read_text())
    evaluation = spec.get("evaluation", {})
    chosen = evaluation.get("selection", {}).get("chosen")  # absent: the DP helper itself
    return Trained(
        accepted=accepted,
        verdict=verdict,
        directory=directory,
        kind=str(spec["kind"]),
        candidate=str(spec.get("training", {}).get("candidate", "learned (DP)")),
        predicted_usage=float(chosen["usage"] if chosen else evaluation.get("dp_usage", "nan")),
        predicted_success=float(
            chosen["success"] if chosen else evaluation.get("dp_success", "nan")
        ),
        table_dir=next(iter(sorted(out.glob("C*/table"))), None),
    )


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # the trainer's lines unwrapped
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False
    )


def _verdict(output: str) -> list[str]:
    """The gate's reasons: the indented lines `escalator train --install` prints after
    naming the report."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("report:")), len(lines))
    return [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 1)
        self._last = now
