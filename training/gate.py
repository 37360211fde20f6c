"""Whether a trained helper may be installed: better than `never`, and than the helper
installed now, beyond the uncertainty of its own estimate.

Both comparisons are paired: the figures come from the same logged sessions, so the gain
over `never`, and the difference from the installed helper, are estimated per session
(training/selection.py) with their standard errors. The installed helper is judged by
scoring the logged states with its own artifact, where it reads them as they were logged
(its text rendering must be the one `escalator train` logs now); otherwise the gate says
it could not compare. The chosen helper was the best of several candidates judged on those
same sessions, so its estimate is optimistic (the winner's curse): the bounds are
Bonferroni-corrected for the number compared (z = 2.81 for ten candidates, not 1.96).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.artifacts import ArtifactError, load_artifact
from router.state import FEATURE_NAMES
from training.dataset import Dataset
from training.linear import HiddenLayer, ScoreModel
from training.selection import Evidence, PolicyEstimate, judge, replay_rule, z_for


@dataclass(frozen=True)
class Verdict:
    install: bool
    reasons: list[str]


def check(
    chosen: PolicyEstimate,
    installed: PolicyEstimate | None,
    installed_note: str | None,
    compared: int = 1,
    versus_installed: tuple[float, float] | None = None,
) -> Verdict:
    """`versus_installed`: the chosen helper's success minus the installed one's, paired
    per session, and its standard error."""
    reasons = []
    ok = True
    z = z_for(compared)
    if not chosen.estimable:
        ok = False
        reasons.append(
            f"{chosen.policy}: not estimable from these logs (support {chosen.support}, "
            f"{chosen.unsupported:.0%} of its interventions where the logs had no choice)"
        )
    low = chosen.gain - z * chosen.gain_se
    if not low > 0:
        ok = False
        reasons.append(
            f"{chosen.policy}: gain over never {chosen.gain:+.3f} ± {z * chosen.gain_se:.3f} "
            f"is not above zero beyond its uncertainty (best of {compared} candidates)"
        )
    else:
        reasons.append(
            f"gain over never {chosen.gain:+.3f} ± {z * chosen.gain_se:.3f} "
            f"(best of {compared} candidates)"
        )
    if installed is not None and versus_installed is not None:
        difference, se = versus_installed
        if not difference - z * se > 0:
            ok = False
            reasons.append(
                f"not better than the installed helper beyond its uncertainty: "
                f"{difference:+.3f} ± {z * se:.3f} (installed {installed.success:.3f} at "
                f"{installed.usage:.2f} interventions per episode, this one "
                f"{chosen.success:.3f} at {chosen.usage:.2f})"
            )
        else:
            reasons.append(f"better than the installed helper by {difference:+.3f} ± {z * se:.3f}")
    if installed_note:
        reasons.append(installed_note)
    return Verdict(ok, reasons)


def judge_installed(
    path: Path, data: Dataset, evidence: Evidence
) -> tuple[PolicyEstimate | None, np.ndarray | None, str | None]:
    """The installed helper's estimate on the logged sessions and where it intervenes, or
    why there is none."""
    if not path.exists():
        return None, None, None
    try:
        artifact = load_artifact(path, FEATURE_NAMES)
    except ArtifactError as exc:
        note = f"the installed helper could not be read ({exc}): compared with never only"
        return None, None, note
    embedding = artifact.scorer.embedding
    if embedding is not None and (
        getattr(embedding, "text", "recent") != "labelled" or data.texts is None
    ):
        return (
            None,
            None,
            ("the installed helper reads an older state rendering: compared with never only"),
        )
    names = {name: i for i, name in enumerate(FEATURE_NAMES)}
    scorer = artifact.scorer
    columns = [names[name] for name in scorer.features]
    parts = [data.features[:, columns].astype(np.float64)]
    if embedding is not None and data.texts is not None:
        parts.append(np.array([embedding.embed(t) for t in data.texts]))  # type: ignore[attr-defined]
    # The scorer's inputs as the proxy reads them (features, embedding, remaining budget), run
    # as training's ScoreModel, hidden units included, once per budget the replay can leave.
    design = np.hstack([*parts, np.zeros((data.n_steps, 1))])
    hidden = None
    if scorer.hidden is not None:
        h = scorer.hidden
        rows = np.zeros((len(h.bias), design.shape[1]))
        rows[:, list(h.columns)] = np.array(h.rows).reshape(len(h.bias), -1)
        hidden = HiddenLayer(rows, np.array(h.bias), np.array(h.output))
    model = ScoreModel(
        scorer.bias,
        np.array([*scorer.feature_weights, *scorer.embedding_weights, scorer.budget_weight]),
        hidden,
    )
    by_budget = []
    for left in range(evidence.cap + 1):
        design[:, -1] = left
        by_budget.append(model.predict(design))

    def escalates(row: int, left: int) -> bool:
        score = float(by_budget[min(left, evidence.cap)][row])
        if artifact.kind == "learned":
            return bool(score >= artifact.threshold(left))
        return artifact.table_action(score, left) == 1

    flags = replay_rule(evidence, escalates)
    return judge(evidence, f"installed ({artifact.policy_id})", flags), flags, None
