"""The learning loop, end to end, against a real proxy process.

1. Baseline: the strong model alone on fresh tasks (the weak model alone is `never`, in 4),
   so the gap an intervention can close is known.
2. Collect: tasks through route `collect` (the hand-set threshold policy) by a tenant with
   exploration ε, so both actions are logged with their propensities.
3. Train: the training pipeline on the proxy's own step logs; install the helper.
4. Compare on the same fresh tasks as 1 (another seed than collection's): the trained
   helper, then never / always, then random and PRM-threshold set to escalate on the same
   share of steps as the helper did.
"""

from __future__ import annotations

import math
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.episodes import EpisodeResult, Workload
from demo.progress import Stage
from demo.proxy import ProxyProcess, key_digest
from server.local.process import free_port

NEVER = "never (weak only)"


@dataclass(frozen=True)
class DemoUpstreams:
    """The two upstreams as the proxy's config names them: {"base_url": ...} for a server
    already running, {"local": <catalogue model>} for one the proxy serves itself."""

    weak: dict[str, Any]
    weak_model: str
    strong: dict[str, Any]
    strong_model: str
    extra_interventions: tuple[dict[str, Any], ...] = ()  # e.g. best_of_n on the strong model


@dataclass(frozen=True)
class DemoConfig:
    directory: Path
    collect_tasks: int = 400
    eval_tasks: int = 200
    budget: int = 2  # interventions per session (the hard cap)
    target: float = 1.0  # interventions per episode the helper aims at
    exploration: float = 0.3
    seed: int = 0
    workers: int = 4  # episodes played at once
    timeout_s: float = 120.0


@dataclass(frozen=True)
class PolicyResult:
    name: str
    episodes: list[EpisodeResult]

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def success(self) -> float:
        return sum(e.success for e in self.episodes) / max(self.n, 1)

    @property
    def interventions(self) -> float:
        return sum(e.interventions for e in self.episodes) / max(self.n, 1)

    @property
    def steps(self) -> float:
        return sum(e.steps for e in self.episodes) / max(self.n, 1)

    @property
    def escalation_rate(self) -> float:
        """Escalations per step that could have escalated (budget left)."""
        eligible = sum(e.eligible_steps for e in self.episodes)
        return sum(e.interventions for e in self.episodes) / max(eligible, 1)

    def wilson(self, z: float = 1.96) -> tuple[float, float]:
        """95% Wilson score interval of the success rate."""
        n, p = self.n, self.success
        if n == 0:
            return (0.0, 1.0)
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class DemoResult:
    baselines: list[PolicyResult] = field(default_factory=list)
    collected: PolicyResult | None = None
    compared: list[PolicyResult] = field(default_factory=list)
    helper_dir: Path | None = None
    training_report: Path | None = None
    random_p: float = 0.0
    threshold: float = 0.0

    @property
    def all(self) -> list[PolicyResult]:
        return [*self.baselines, *self.compared]


def run_demo(
    config: DemoConfig, workload: Workload, upstreams: DemoUpstreams, stage: Stage
) -> DemoResult:
    from training.pipeline import TrainConfig, train
    from training.rollout import install

    directory = config.directory
    collector, evaluator = secrets.token_hex(8), secrets.token_hex(8)
    result = DemoResult()
    base_config = _proxy_config(config, upstreams, collector, evaluator)

    def play_all(
        proxy: ProxyProcess, name: str, route: str, key: str, seed: int, count: int
    ) -> PolicyResult:
        advance = stage(name, count)

        def one(index: int) -> EpisodeResult:
            episode = workload.play(proxy.url, key, route, index, seed)
            advance(1)
            return episode

        with ThreadPoolExecutor(config.workers) as pool:
            return PolicyResult(name, list(pool.map(one, range(count))))

    eval_seed = config.seed + 1_000_000
    routes = _routes(upstreams, {"collect": {"kind": "threshold", "threshold": 0.5}})
    with _running(base_config | {"routes": routes}, directory / "proxy") as proxy:
        # The weak model alone is `never` below: the same configuration, played once.
        result.baselines.append(
            play_all(proxy, "strong only", "strong-only", evaluator, eval_seed, config.eval_tasks)
        )
        result.collected = play_all(
            proxy,
            "collecting (exploration)",
            "collect",
            collector,
            config.seed,
            config.collect_tasks,
        )

    stage("training the helper", None)(0)
    trained = train(
        TrainConfig(
            logs=str(directory / "data" / "logs"),
            out=str(directory / "training"),
            budgets=(config.target,),
            cap=config.budget,
            route="collect",
            seed=config.seed,
        )
    )
    # The helper `escalator train` chose (the DP helper when no candidate is estimable).
    chosen = trained.selected.directory if trained.selected else trained.budgets[0].learned_dir
    current = directory / "data" / "helpers" / "current"
    install(chosen, current)
    result.helper_dir = current
    result.training_report = trained.report

    helper_routes = _routes(
        upstreams,
        {
            "helper": {"kind": "learned", "artifact": str(current)},
            "never": {"kind": "never"},
            "always": {"kind": "always"},
        },
    )
    with _running(base_config | {"routes": helper_routes}, directory / "proxy") as proxy:
        for name, label in (("helper", "helper"), ("never", NEVER), ("always", "always")):
            result.compared.append(
                play_all(proxy, label, name, evaluator, eval_seed, config.eval_tasks)
            )
    rate = result.compared[0].escalation_rate
    result.random_p = rate
    result.threshold = _threshold_at_rate(trained.state_value[trained.eligible], rate)
    matched_routes = _routes(
        upstreams,
        {
            "random": {"kind": "random", "p": max(rate, 1e-6), "seed": config.seed},
            "threshold": {
                "kind": "threshold",
                "threshold": result.threshold,
                "prm": str(trained.budgets[0].table_dir),
            },
        },
    )
    with _running(base_config | {"routes": matched_routes}, directory / "proxy") as proxy:
        for name, label in (
            ("random", "random (same rate)"),
            ("threshold", "PRM threshold (same rate)"),
        ):
            result.compared.append(
                play_all(proxy, label, name, evaluator, eval_seed, config.eval_tasks)
            )
    return result


class _running:
    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.proxy = ProxyProcess(config, directory)

    def __enter__(self) -> ProxyProcess:
        return self.proxy.start()

    def __exit__(self, *exc: object) -> None:
        self.proxy.stop()


def _proxy_config(
    config: DemoConfig, upstreams: DemoUpstreams, collector: str, evaluator: str
) -> dict[str, Any]:
    tenant = {
        "interventions_per_session": config.budget,
        "capture_content": True,
    }
    return {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"dir": str(config.directory / "data"), "budget_store": "sqlite"},
        "upstreams": {
            "weak": {**upstreams.weak, "timeout_s": config.timeout_s},
            "strong": {**upstreams.strong, "timeout_s": config.timeout_s},
        },
        "tenants": {
            "collector": {
                **tenant,
                "api_keys": [key_digest(collector)],
                "exploration": config.exploration,
            },
            "evaluator": {**tenant, "api_keys": [key_digest(evaluator)]},
        },
    }


def _routes(upstreams: DemoUpstreams, policies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    weak = {"upstream": "weak", "model": upstreams.weak_model}
    strong = {"kind": "strong", "upstream": "strong", "model": upstreams.strong_model, "cost": 1}
    interventions = [strong, *upstreams.extra_interventions]
    routes: dict[str, Any] = {
        name: {"base": weak, "policy": policy, "interventions": interventions}
        for name, policy in policies.items()
    }
    routes["strong-only"] = {
        "base": {"upstream": "strong", "model": upstreams.strong_model},
        "policy": {"kind": "never"},
    }
    return routes


def _threshold_at_rate(value: np.ndarray, rate: float) -> float:
    """The PRM-risk threshold at which the threshold policy escalates on a share `rate` of
    the logged states (the share of steps the helper escalated on)."""
    return float(np.quantile(1.0 - value, 1.0 - min(max(rate, 0.0), 1.0)))
