"""The training report: `report.md` and PNG plots beside it (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from training.disagreement import SEPARATION
from training.evaluation import crowding_caution

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from training.ope import Estimate
    from training.pipeline import TrainResult
    from training.selection import PolicyEstimate


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
        *_selection_section(result),
        "## The paper's method: DP helper (off-policy, held-out sessions)",
        "",
        "Success and interventions per episode by per-decision doubly robust (DR) and IPS "
        "estimates with the logged propensities (clipped at "
        f"{c.clip:g}); ±1.96 standard errors; ESS = effective number of episodes, and "
        f"**not estimable** where it is under {_MIN_ESS} (the product of importance ratios of "
        "a deterministic policy over long episodes collapses): the tabular MDP's own "
        "prediction is shown instead, labelled `model`. Baselines are tuned to the helper's "
        "usage on the model.",
        "",
    ]
    for budget in result.budgets:
        s = budget.solution
        lines += [
            f"### DP, target C = {budget.target:g}",
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


_MIN_ESS = 10  # episodes: below it an importance-weighted figure is not reported


def _estimate_table(estimates: list[Estimate]) -> list[str]:
    rows = [
        "| policy | success DR | success IPS | interventions DR | IPS | model success | "
        "model usage | ESS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in estimates:
        if e.ess < _MIN_ESS:
            rows.append(
                f"| {e.policy} | not estimable | not estimable | not estimable | "
                f"not estimable | model {e.model_success:.3f} | model {e.model_usage:.2f} | "
                f"{e.ess:,.1f} |"
            )
            continue
        rows.append(
            f"| {e.policy} | {e.success_dr:.3f} ± {1.96 * e.success_se:.3f} | "
            f"{e.success_ips:.3f} | {e.usage_dr:.2f} ± {1.96 * e.usage_se:.2f} | "
            f"{e.usage_ips:.2f} | {e.model_success:.3f} | {e.model_usage:.2f} | {e.ess:,.0f} |"
        )
    return rows


def _selection_section(result: TrainResult) -> list[str]:
    lines = [
        "## The chosen helper (every session, cross-fitted)",
        "",
        "Candidates are judged at each target usage by a first-order doubly robust estimate "
        "(per-step effects of intervening, from cross-fitted pseudo-outcomes, added along "
        "the logged sessions): ±1.96 standard errors over sessions; ESS = effective number of "
        "steps the correction rests on; support = logged intervention/base steps where the "
        "policy intervenes. The chosen one is the best of several judged on the same "
        "sessions, so its figure is optimistic; `--install` uses a Bonferroni-corrected "
        "bound.",
        "",
    ]
    caution = crowding_caution(result.crowded)
    if caution is not None:
        lines += [f"**Caution:** {caution}", ""]
    checked = result.summary.agreement_checks > 0
    for budget in result.budgets:
        selected = budget.selected
        lines += [f"### Target C = {budget.target:g}", ""]
        bound = _bound_line(budget.worth_making, budget.beats_random, budget.usage_goal, checked)
        lines += [bound, ""]
        if selected is None:
            lines += ["No candidate is estimable from these logs.", ""]
            continue
        fullest: dict[str, PolicyEstimate] = {}
        for e in selected.frontier:
            if e.usage <= budget.usage_goal * 1.05 and (
                e.policy not in fullest or e.usage > fullest[e.policy].usage
            ):
                fullest[e.policy] = e
        lines += [
            f"Chosen: **{selected.name}** among {selected.compared} candidates, "
            f"exported to `{selected.directory}`.",
            "",
            "| policy | success | interventions/episode | gain over never | ESS | support |",
            "|---|---:|---:|---:|---:|---:|",
            *[
                _selection_row(e, chosen=e is selected.estimate)
                for e in [selected.estimate, *selected.baselines]
            ],
            "",
            "Every candidate at the target usage:",
            "",
            "| candidate | success | interventions/episode | gain over never | ESS | support |",
            "|---|---:|---:|---:|---:|---:|",
            *[_selection_row(e) for e in sorted(fullest.values(), key=lambda e: -e.gain)],
            "",
        ]
    return lines


def _selection_row(e: PolicyEstimate, chosen: bool = False) -> str:
    name = f"**{e.policy}**" if chosen else e.policy
    if not e.estimable:
        figure = gain = f"not estimable ({e.success:.3f})"
    else:
        figure = f"{e.success:.3f} ± {1.96 * e.success_se:.3f}"
        gain = f"{e.gain:+.3f} ± {1.96 * e.gain_se:.3f}"
    return (
        f"| {name} | {figure} | {e.usage:.2f} | {gain} | {e.ess:,.0f} | "
        f"{e.support[0]}/{e.support[1]} |"
    )


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
    """The chosen helper per target against the baselines at its usage, all from the same
    first-order DR estimates (the table of "The chosen helper"), with their intervals."""
    markers = {"never": "s", "always": "^", "random": "x", "PRM threshold": "v"}
    seen: set[str] = set()
    with _figure(
        path,
        "interventions per episode",
        "success rate",
        "Success vs interventions (first-order DR, every session)",
    ) as ax:
        for budget in result.budgets:
            selected = budget.selected
            if selected is None:
                continue
            for e in [selected.estimate, *selected.baselines]:
                family = "chosen helper" if e is selected.estimate else e.policy.split(" (")[0]
                # A figure the logs cannot back is drawn hollow, without an interval.
                ax.errorbar(
                    e.usage,
                    e.success,
                    yerr=1.96 * e.success_se if e.estimable else None,
                    fmt=markers.get(family, "o"),
                    color=_color(family),
                    mfc=None if e.estimable else "none",
                    label=family if family not in seen else None,
                    alpha=0.8,
                    capsize=3,
                )
                seen.add(family)
        cur = result.current
        ax.plot(cur.usage_dr, cur.success_dr, "*", color="black", ms=12, label="as logged")


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
        "chosen helper": "tab:red",
    }.get(family, "tab:brown")


def _bound_line(worth: float | None, beats_random: float | None, goal: float, checked: bool) -> str:
    if worth is not None:
        why = (
            f"The agreement checks say {worth:.2f} interventions per episode are worth making "
            "(a quarter more than the steps where the base model is likely to answer "
            "otherwise: its rate of differing above a routine step's, at the rate of the "
            "helper's top-ranked steps)"
        )
    elif beats_random is not None:
        without = (
            "The agreement checks show no step clearly likelier to differ than a routine one "
            f"(by {SEPARATION:g} standard errors), so they count none; the"
            if checked
            else "Without agreement checks, the"
        )
        why = (
            f"{without} default candidate's estimated gain most exceeds random escalation's "
            f"at {beats_random:.2f} interventions per episode"
        )
    else:
        why = "Nothing bounds the usage below the target"
    return f"{why}: candidates are judged at {goal:.2f}."
