"""The training report: `report.md` and PNG plots beside it (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from training.ope import Estimate
    from training.pipeline import TrainResult


def write_report(result: TrainResult, out: Path) -> Path:
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    _plot_tradeoff(result, plots / "success_vs_interventions.png")
    _plot_calibration(result, plots / "prm_calibration.png")
    _plot_timing(result, plots / "escalation_timing.png")
    path = out / "report.md"
    path.write_text(render_markdown(result))
    return path


def render_markdown(result: TrainResult) -> str:
    c = result.config
    lines = [
        "# Escalator helper training report",
        "",
        f"Logs `{c.logs}`, seed {c.seed}, hard cap {result.cap} interventions per session, "
        f"PRM `{c.prm}`, embedding `{c.embedding}`.",
        "",
        "## Data",
        "",
        *[f"- {line.strip()}" for line in result.summary.lines_of_text()],
        f"- held-out sessions: {int(result.logged['sessions'])} (every figure below is "
        "measured on them)",
        f"- logged (held-out): success {result.logged['success']:.3f}, "
        f"{result.logged['usage']:.2f} interventions per episode, "
        f"{result.logged['mean_steps']:.1f} steps per episode",
        "",
        "## Candidates and baselines (off-policy, held-out sessions)",
        "",
        "Success and interventions per episode by doubly robust (DR) and IPS estimates with "
        "the logged propensities (clipped at "
        f"{c.clip:g}); ±1.96 standard errors; ESS = effective number of episodes; "
        "model = the tabular MDP's own prediction. Baselines are tuned to the helper's "
        "usage on the model.",
        "",
    ]
    for budget in result.budgets:
        s = budget.solution
        lines += [
            f"### Target C = {budget.target:g}",
            "",
            f"DP: λ = {s.penalty:.4f}, predicted success {s.success:.3f} at "
            f"{s.usage:.2f} interventions per episode. Helper agrees with the DP on "
            f"{budget.agreement:.1%} of held-out steps where it could escalate; "
            f"artifact `{budget.learned_dir}`"
            + (f", table `{budget.table_dir}`." if budget.table_dir else "."),
            "",
            *_estimate_table([*budget.estimates, result.current]),
            "",
        ]
    cal = result.calibration
    lines += [
        "## PRM calibration (held-out steps)",
        "",
        f"Brier score {cal.brier:.4f} (predicting the base rate: {cal.brier_base_rate:.4f}), "
        f"{cal.n:,} steps.",
        "",
        "| predicted | steps | mean predicted | observed |",
        "|---|---:|---:|---:|",
        *[f"| {b} | {n:,} | {p:.3f} | {o:.3f} |" for b, n, p, o in cal.table()],
        "",
    ]
    for name, action_cal in result.action_calibration.items():
        lines.append(
            f"Per-action PRM, {name}: Brier {action_cal.brier:.4f} "
            f"(base rate {action_cal.brier_base_rate:.4f}) on {action_cal.n:,} steps."
        )
    lines += [
        "",
        "## Plots",
        "",
        "![success vs interventions](plots/success_vs_interventions.png)",
        "![PRM calibration](plots/prm_calibration.png)",
        "![escalation timing](plots/escalation_timing.png)",
        "",
        "## Stage timings (s)",
        "",
        ", ".join(f"{k} {v:g}" for k, v in result.timing.items()),
        "",
    ]
    return "\n".join(lines)


def _estimate_table(estimates: list[Estimate]) -> list[str]:
    rows = [
        "| policy | success DR | success IPS | interventions DR | IPS | model success | "
        "model usage | ESS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in estimates:
        rows.append(
            f"| {e.policy} | {e.success_dr:.3f} ± {1.96 * e.success_se:.3f} | "
            f"{e.success_ips:.3f} | {e.usage_dr:.2f} ± {1.96 * e.usage_se:.2f} | "
            f"{e.usage_ips:.2f} | {e.model_success:.3f} | {e.model_usage:.2f} | {e.ess:,.0f} |"
        )
    return rows


@contextmanager
def _figure(path: Path, xlabel: str, ylabel: str, title: str) -> Iterator[Axes]:
    """One plot: drawn on the axes yielded, then labelled and written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _plot_tradeoff(result: TrainResult, path: Path) -> None:
    markers = {"never": "s", "always": "^", "random": "x", "PRM threshold": "v", "DP table": "D"}
    seen: set[str] = set()
    candidates_x, candidates_y = [], []
    with _figure(
        path,
        "interventions per episode (DR)",
        "success rate (DR)",
        "Success vs interventions, held-out sessions",
    ) as ax:
        for budget in result.budgets:
            for e in budget.estimates:
                family = e.policy.split(" C=")[0].split(" (")[0]
                if family == "helper":
                    candidates_x.append(e.usage_dr)
                    candidates_y.append(e.success_dr)
                    continue
                ax.errorbar(
                    e.usage_dr,
                    e.success_dr,
                    yerr=1.96 * e.success_se,
                    fmt=markers.get(family, "o"),
                    color=_color(family),
                    label=family if family not in seen else None,
                    alpha=0.8,
                )
                seen.add(family)
        order = np.argsort(candidates_x)
        ax.plot(
            np.array(candidates_x)[order],
            np.array(candidates_y)[order],
            "o-",
            color="tab:red",
            label="trained helper (per C)",
        )
        cur = result.current
        ax.plot(cur.usage_dr, cur.success_dr, "*", color="black", ms=12, label="current")


def _plot_calibration(result: TrainResult, path: Path) -> None:
    cal = result.calibration
    ok = cal.count > 0
    with _figure(
        path, "predicted P(success)", "observed success rate", "PRM reliability, held-out steps"
    ) as ax:
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
        ax.plot(cal.predicted[ok], cal.observed[ok], "o-", label=f"PRM (Brier {cal.brier:.3f})")


def _plot_timing(result: TrainResult, path: Path) -> None:
    with _figure(
        path,
        "step index in the episode",
        "escalation rate",
        "When escalations happen, held-out states",
    ) as ax:
        for name, rates in result.escalation_by_step.items():
            ax.plot(range(len(rates)), rates, "o-", label=name, ms=3)


def _color(family: str) -> str:
    return {
        "never": "tab:gray",
        "always": "tab:purple",
        "random": "tab:orange",
        "PRM threshold": "tab:blue",
        "DP table": "tab:green",
    }.get(family, "tab:brown")
