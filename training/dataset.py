"""The training input: step-log segments joined with session outcomes into trajectories.

Reads every `*.jsonl` and `*.jsonl.gz` file under a directory (the proxy's rotated segments,
DESIGN.md "The step record"). Step feedback records (`kind: feedback`, a per-step reward the
environment reported) are summed per step into `reward`; agreement checks (`kind: agreement`,
whether the base model would have answered an escalated step the same) go into `agreement`.
A step belongs to a trajectory
(s_0, a_0, ..., s_T, z) when it was routed (it has a decision), its session reported an
outcome, and the session's steps are complete (indices 0..T-1 with none missing: a gap
means a dropped log row, and a trajectory with a hole would teach the wrong transitions).
Everything left out is counted in `LoadSummary`, and malformed lines are skipped, never fatal.

The result is a struct of numpy arrays, one row per step, sorted by (session, step).
"""

from __future__ import annotations

import gzip
import hashlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from router.state import FEATURE_NAMES, Message, state_text

BASE = "base"


@dataclass
class LoadSummary:
    files: int = 0
    lines: int = 0
    malformed: int = 0
    steps: int = 0
    outcomes: int = 0
    feedback: int = 0
    feedback_unmatched: int = 0  # feedback for a step or session not in the logs
    agreement_checks: int = 0
    unrouted_steps: int = 0  # pass-through models and one-step sessions: nothing decided
    other_route_steps: int = 0
    sessions_without_outcome: int = 0
    incomplete_sessions: int = 0  # a step index missing (a dropped log row)
    steps_used: int = 0
    sessions_used: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    def lines_of_text(self) -> list[str]:
        out = [
            f"{self.files} files, {self.lines:,} lines: {self.steps:,} steps, "
            f"{self.outcomes:,} outcomes, {self.feedback:,} step feedback, "
            f"{self.agreement_checks:,} agreement checks",
            f"used {self.steps_used:,} steps in {self.sessions_used:,} sessions",
        ]
        skipped = {
            "malformed lines": self.malformed,
            "unrouted steps": self.unrouted_steps,
            "steps of other routes": self.other_route_steps,
            "sessions without an outcome": self.sessions_without_outcome,
            "incomplete sessions": self.incomplete_sessions,
            "feedback records for unknown steps": self.feedback_unmatched,
        }
        out += [f"skipped {n:,} {what}" for what, n in skipped.items() if n]
        if not self.feedback:
            out.append(
                "no step feedback (POST /v1/sessions/{id}/feedback): the helper learns from "
                "session outcomes alone"
            )
        if not self.agreement_checks:
            out.append(
                "no agreement checks (a route's agreement_checks, on by default): escalated "
                "steps do not say where the base model would have answered otherwise"
            )
        out += [f"  e.g. {example}" for example in self.malformed_examples]
        return out


@dataclass(frozen=True)
class Dataset:
    """Logged trajectories, one row per step sorted by (session, step).

    `remaining` is the session budget left before the step, `cost` the budget units the step
    spent (0 on base or a refunded intervention), `propensity` the probability with which
    the logged action was chosen, `policy_action` what the logging policy itself chose
    before exploration flipped it. `texts` holds the newest turns for text models, or None
    where the tenant did not allow content capture.
    """

    sessions: list[str]  # "tenant/session"
    success: np.ndarray  # per session, float 0/1
    start: np.ndarray  # per session, index of its first step; start[-1] == n_steps
    session: np.ndarray  # per step
    step: np.ndarray
    action: np.ndarray  # 1 = an intervention
    propensity: np.ndarray
    policy_action: np.ndarray
    remaining: np.ndarray
    limit: np.ndarray  # the session's budget at its first step
    cost: np.ndarray
    p_escalate: np.ndarray
    features: np.ndarray  # float32, columns FEATURE_NAMES
    reward: np.ndarray  # per step: the environment's step rewards, summed (0 where none)
    # per step: whether the base model would have answered it as the intervention did
    # (1 agrees, 0 differs; NaN where not checked: base steps, or checks turned off)
    agreement: np.ndarray
    texts: list[str] | None
    digest: str  # sha256 over every line read, in file order

    @property
    def n_steps(self) -> int:
        return int(self.session.shape[0])

    @property
    def n_sessions(self) -> int:
        return len(self.sessions)

    @property
    def has_step_rewards(self) -> bool:
        return bool(np.any(self.reward != 0))

    @property
    def is_last(self) -> np.ndarray:
        """True on each session's final step."""
        last = np.zeros(self.n_steps, dtype=bool)
        last[self.start[1:] - 1] = True
        return last

    def subset(self, session_mask: np.ndarray) -> Dataset:
        """The trajectories of the sessions where `session_mask` is true."""
        keep_sessions = np.flatnonzero(session_mask)
        rows = np.concatenate(
            [np.arange(self.start[s], self.start[s + 1]) for s in keep_sessions]
            or [np.zeros(0, dtype=np.int64)]
        )
        lengths = np.diff(self.start)[keep_sessions]
        renumber = np.repeat(np.arange(len(keep_sessions)), lengths)
        return Dataset(
            sessions=[self.sessions[s] for s in keep_sessions],
            success=self.success[keep_sessions],
            start=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            session=renumber.astype(np.int32),
            step=self.step[rows],
            action=self.action[rows],
            propensity=self.propensity[rows],
            policy_action=self.policy_action[rows],
            remaining=self.remaining[rows],
            limit=self.limit[rows],
            cost=self.cost[rows],
            p_escalate=self.p_escalate[rows],
            features=self.features[rows],
            reward=self.reward[rows],
            agreement=self.agreement[rows],
            texts=None if self.texts is None else [self.texts[i] for i in rows],
            digest=self.digest,
        )


class DatasetError(ValueError):
    """The logs cannot train a helper; the message says what is missing."""


def segment_files(directory: Path) -> list[Path]:
    files = [*directory.rglob("*.jsonl"), *directory.rglob("*.jsonl.gz")]
    return sorted(p for p in files if p.is_file())


def load_dataset(
    directory: str | Path, route: str | None = None, text_chars: int = 2_000
) -> tuple[Dataset, LoadSummary]:
    """Read a log directory into trajectories; raise DatasetError when nothing is usable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such log directory")
    files = segment_files(directory)
    summary = LoadSummary(files=len(files))
    if not files:
        raise DatasetError(f"{directory}: no step-log segments (*.jsonl, *.jsonl.gz)")
    steps: dict[tuple[str, str], list[_Row]] = {}
    outcomes: dict[tuple[str, str], float] = {}
    feedback: list[tuple[tuple[str, str], Any, Any, float]] = []
    checks: list[tuple[tuple[str, str], Any, Any, float]] = []
    digest = hashlib.sha256()
    for record in _records(files, summary, digest):
        kind = record.get("kind")
        key = (str(record.get("tenant", "")), str(record.get("session", "")))
        if kind == "outcome":
            summary.outcomes += 1
            outcomes[key] = 1.0 if record.get("success") is True else 0.0
        elif kind == "feedback":
            reward = record.get("reward")
            if isinstance(reward, bool) or not isinstance(reward, int | float):
                _malformed(summary, f"feedback for {key[1]}: reward is not a number")
                continue
            summary.feedback += 1
            feedback.append((key, record.get("step"), record.get("request_id"), float(reward)))
        elif kind == "agreement":
            value = record.get("agreement")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                _malformed(summary, f"agreement for {key[1]}: not a number in [0, 1]")
                continue
            summary.agreement_checks += 1
            checks.append((key, record.get("step"), record.get("request_id"), float(value)))
        elif kind == "step":
            summary.steps += 1
            if record.get("decision") is None or record.get("one_step"):
                summary.unrouted_steps += 1
            elif route is not None and record.get("route") != route:
                summary.other_route_steps += 1
            else:
                steps.setdefault(key, []).append(_step_row(record, summary, text_chars))
    rewards, reports = _per_step(steps, feedback, summary)
    agreed, checked = _per_step(steps, checks)
    agreement = {k: v / checked[k] for k, v in agreed.items()}
    data = _assemble(steps, outcomes, rewards, reports, agreement, summary, digest.hexdigest())
    return data, summary


def _per_step(
    steps: dict[tuple[str, str], list[_Row]],
    feedback: list[tuple[tuple[str, str], Any, Any, float]],
    summary: LoadSummary | None = None,
) -> tuple[dict[tuple[str, str, int], float], dict[tuple[str, str, int], int]]:
    """Per-step records' values summed per (tenant, session, step), and how many records
    are behind each sum; a record names its step by index, or by the step's request id.
    Feedback for no known step is counted in `summary`."""
    by_id = {
        (key, row.request_id): row.step
        for key, rows in steps.items()
        for row in rows
        if row.step >= 0
    }
    out: dict[tuple[str, str, int], float] = {}
    reports: dict[tuple[str, str, int], int] = {}
    for key, step, request_id, reward in feedback:
        if isinstance(step, int) and not isinstance(step, bool):
            index: int | None = step
        else:
            index = by_id.get((key, str(request_id)))
        if index is None or key not in steps:
            if summary is not None:
                summary.feedback_unmatched += 1
            continue
        out[(*key, index)] = out.get((*key, index), 0.0) + reward
        reports[(*key, index)] = reports.get((*key, index), 0) + 1
    return out, reports


def _records(files: list[Path], summary: LoadSummary, digest: Any) -> Iterator[dict[str, Any]]:
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as handle:
                for number, line in enumerate(handle, 1):
                    summary.lines += 1
                    digest.update(line)
                    if not line.strip():
                        continue
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        record = None
                    if not isinstance(record, dict) or record.get("kind") not in (
                        "step",
                        "outcome",
                        "feedback",
                        "agreement",
                    ):
                        _malformed(
                            summary,
                            f"{path.name}:{number}: not a step, outcome, feedback or agreement "
                            "record",
                        )
                        continue
                    yield record
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            _malformed(summary, f"{path.name}: unreadable from here on ({exc})")


def _malformed(summary: LoadSummary, example: str) -> None:
    summary.malformed += 1
    if len(summary.malformed_examples) < 3:
        summary.malformed_examples.append(example)


class _Row(NamedTuple):
    """One step while the logs are read: compact, since a million of them are held at once
    (features packed as float32 bytes)."""

    step: int
    request_id: str
    ts: float
    action: int
    propensity: float
    policy_action: int
    remaining: int
    cost: int
    p_escalate: float
    features: bytes
    text: str | None


_MALFORMED_STEP = _Row(-1, "", 0.0, 0, 0.0, 0, 0, 0, 0.0, b"", None)


def _step_row(record: dict[str, Any], summary: LoadSummary, text_chars: int) -> _Row:
    try:
        decision = record["decision"]
        state = record.get("state") or {}
        features = state.get("features") or {}
        messages: list[Message] | None = state.get("messages")
        before = decision.get("budget_before")
        after = decision.get("budget_after")
        action = 0 if decision["action"] == BASE else 1
        explored = bool(decision.get("explored"))
        return _Row(
            step=int(record["step"]),
            request_id=str(record.get("id", "")),
            ts=float(record.get("ts") or 0.0),
            action=action,
            propensity=float(decision.get("propensity", 1.0)),
            policy_action=action ^ 1 if explored else action,
            remaining=int(before) if before is not None else 0,
            cost=max(int(before) - int(after), 0)
            if before is not None and after is not None
            else 0,
            p_escalate=float(decision.get("p_escalate", 0.0)),
            features=array("f", [float(features.get(n, 0.0)) for n in FEATURE_NAMES]).tobytes(),
            text=state_text(messages, text_chars) if isinstance(messages, list) else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        _malformed(summary, f"step {record.get('id', '?')}: missing or mistyped fields")
        return _MALFORMED_STEP


def _assemble(
    steps: dict[tuple[str, str], list[_Row]],
    outcomes: dict[tuple[str, str], float],
    rewards: dict[tuple[str, str, int], float],
    reports: dict[tuple[str, str, int], int],
    agreement: dict[tuple[str, str, int], float],
    summary: LoadSummary,
    digest: str,
) -> Dataset:
    kept: list[tuple[tuple[str, str], float, list[_Row]]] = []
    for key, rows in steps.items():
        rows = [r for r in rows if r is not _MALFORMED_STEP]
        if not rows:
            continue
        if key not in outcomes:
            summary.sessions_without_outcome += 1
            continue
        rows.sort(key=lambda r: (r.step, r.ts))
        if [r.step for r in rows] != list(range(len(rows))):
            summary.incomplete_sessions += 1
            continue
        kept.append((key, outcomes[key], rows))
    kept.sort(key=lambda item: f"{item[0][0]}/{item[0][1]}")
    rows = [r for _, _, session_rows in kept for r in session_rows]
    summary.sessions_used = len(kept)
    summary.steps_used = len(rows)
    if not rows:
        raise DatasetError(_nothing_usable(summary))
    lengths = np.array([len(session_rows) for _, _, session_rows in kept])
    limits = np.repeat([session_rows[0].remaining for _, _, session_rows in kept], lengths)
    texts = [r.text for r in rows if r.text is not None]
    reward = [
        rewards.get((*key, r.step), 0.0) for key, _, session_rows in kept for r in session_rows
    ]
    # Feedback for steps left out above (a session without an outcome, an incomplete one)
    # is unmatched too.
    used = {(*key, r.step) for key, _, session_rows in kept for r in session_rows}
    summary.feedback_unmatched += sum(n for k, n in reports.items() if k not in used)

    def column(name: str, dtype: Any) -> np.ndarray:
        return np.array([getattr(r, name) for r in rows], dtype=dtype)

    return Dataset(
        sessions=[f"{key[0]}/{key[1]}" for key, _, _ in kept],
        success=np.array([z for _, z, _ in kept], dtype=np.float64),
        start=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        session=np.repeat(np.arange(len(kept)), lengths).astype(np.int32),
        step=column("step", np.int32),
        action=column("action", np.int8),
        propensity=column("propensity", np.float64),
        policy_action=column("policy_action", np.int8),
        remaining=column("remaining", np.int32),
        limit=limits.astype(np.int32),
        cost=column("cost", np.int32),
        p_escalate=column("p_escalate", np.float32),
        features=np.frombuffer(b"".join(r.features for r in rows), dtype=np.float32)
        .reshape(len(rows), len(FEATURE_NAMES))
        .copy(),
        reward=np.array(reward, dtype=np.float64),
        agreement=np.array(
            [
                agreement.get((*key, r.step), np.nan)
                for key, _, session_rows in kept
                for r in session_rows
            ],
            dtype=np.float64,
        ),
        texts=texts if len(texts) == len(rows) else None,  # None: some content not captured
        digest=digest,
    )


def _nothing_usable(summary: LoadSummary) -> str:
    if summary.steps == 0:
        return "the logs hold no step records"
    if summary.steps == summary.unrouted_steps + summary.other_route_steps:
        return "no routed step in the logs (only pass-through or one-step requests)"
    if summary.outcomes == 0:
        return (
            "no session outcome in the logs: report each episode's result with "
            "POST /v1/sessions/{id}/outcome"
        )
    return "no session has both complete steps and an outcome"


def check_trainable(data: Dataset, min_sessions: int = 20) -> None:
    """Refuse data that would silently train a useless helper."""
    problems = []
    if data.n_sessions < min_sessions:
        problems.append(f"only {data.n_sessions} sessions with an outcome (need {min_sessions})")
    if not data.action.any():
        problems.append("no step with an intervention: run with exploration > 0")
    elif data.action.all():
        problems.append("no step on the base model: every logged step was escalated")
    if data.success.min() == data.success.max():
        which = "succeeded" if data.success[0] else "failed"
        problems.append(f"every session {which}: the PRM has nothing to learn from")
    if problems:
        raise DatasetError("; ".join(problems))
