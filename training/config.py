"""The configuration of `escalator train`: every field documented once, here. The command's
options are generated from it (training/options.py), the pipeline reads it, the artifacts
record it, and the PRM's part is taken from it in one place (`prm_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.prm import PrmConfig


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how (every exported helper records it)."""

    logs: str = field(metadata={"help": "directory of step-log segments"})
    out: str = field(metadata={"help": "directory for the helpers and the report"})
    budgets: tuple[float, ...] = field(
        default=(),
        metadata={
            "flag": "--budget",
            "metavar": "C",
            "help": "target interventions per episode (repeat for several; default 1..cap)",
        },
    )
    cap: int | None = field(
        default=None,
        metadata={"help": "hard per-session budget (default: the logged sessions' budget)"},
    )
    target_rate: float | None = field(
        default=None,
        metadata={
            "help": "calibrate the helper to escalate on this share of steps (default: as "
            "often as the DP it imitates, per remaining budget)"
        },
    )
    route: str | None = field(
        default=None,
        metadata={"help": "train on this route's steps only (default: every route)"},
    )
    seed: int = field(default=0, metadata={"help": "seeds the folds, the hold-out and every fit"})
    embedding: Literal["hashed", "minilm", "none"] = field(
        default="hashed",
        metadata={
            "help": "the state's text as the helper reads it: hashed n-grams (no extra), "
            "MiniLM (the `embed` extra; slower to serve, not better on the quality "
            "benchmark), or none (features alone, as without captured content)"
        },
    )
    embedding_dim: int = field(
        default=256, metadata={"help": "width of the hashed embedding (MiniLM's is fixed)"}
    )
    embedding_pairs: int = field(
        default=512,
        metadata={
            "help": "buckets of the hashed embedding for pairs of the newest observation's "
            "words, which let a linear helper see conjunctions of facts (0: none)"
        },
    )
    embedding_words: int = field(
        default=512,
        metadata={
            "help": "buckets of the hashed embedding for the words of the newest observation "
            "and action, which the agreement checks' learner may read instead of the pairs "
            "(0: none)"
        },
    )
    prm: Literal["linear", "transformers", "judge"] = field(
        default="linear",
        metadata={
            "help": "the process reward model: a linear model on the logged states, a "
            "transformers model (the `prm` extra, --prm-model), or an LLM judge "
            "(--judge-endpoint)"
        },
    )
    prm_model: str | None = field(
        default=None,
        metadata={"help": "transformers PRM: a local model directory (default: none)"},
    )
    judge_endpoint: str | None = field(
        default=None,
        metadata={"help": "judge PRM: OpenAI-compatible base URL (default: none)"},
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "judge PRM: the model to ask (default: none)"}
    )
    bins: int = field(default=10, metadata={"help": "PRM score bins of the MDP"})
    prior_strength: float = field(
        default=10.0,
        metadata={
            "help": "pseudo-transitions per bin and action drawn toward the per-action "
            "PRM's value where logged transitions are thin"
        },
    )
    holdout: float = field(default=0.2, metadata={"help": "share of held-out sessions"})
    clip: float = field(
        default=100.0,
        metadata={"help": "importance ratios clipped at this in the held-out IPS/DR estimates"},
    )
    l2: float = field(
        default=1.0, metadata={"help": "L2 penalty of the PRM's and the DP helper's fits"}
    )
    max_fit_rows: int = field(
        default=100_000, metadata={"help": "rows sampled for each logistic fit"}
    )
    min_sessions: int = field(
        default=20, metadata={"help": "fewest sessions with an outcome to train on"}
    )
    folds: int = field(
        default=5, metadata={"help": "session folds for cross-fitting the candidates"}
    )
    select_tolerance: float = field(
        default=0.0,
        metadata={
            "help": "standard errors of the chosen candidate's gain given up for fewer "
            "interventions"
        },
    )
    candidates: tuple[str, ...] = field(
        default=(),
        metadata={
            "flag": "--candidate",
            "metavar": "PREFIX",
            "help": "judge only candidates whose names start so, e.g. consensus, "
            "'DR advantage', 'PRM risk', 'DP helper' (repeat for several; default: all)",
        },
    )

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if any(c <= 0 for c in self.budgets):
            return "--budget must be positive"
        if self.cap is not None and self.cap < 1:
            return "--cap must be at least 1"
        if self.target_rate is not None and not 0 < self.target_rate < 1:
            return "--target-rate must be between 0 and 1"
        if not 0 < self.holdout < 1:
            return "--holdout must be between 0 and 1"
        if self.prm == "judge" and not (self.judge_endpoint and self.judge_model):
            return "--prm judge needs --judge-endpoint and --judge-model"
        if self.prm == "transformers" and not self.prm_model:
            return "--prm transformers needs --prm-model (a local model directory)"
        for name, value, least in (
            ("--embedding-dim", self.embedding_dim, 1),
            ("--embedding-pairs", self.embedding_pairs, 0),
            ("--embedding-words", self.embedding_words, 0),
            ("--bins", self.bins, 1),
            ("--max-fit-rows", self.max_fit_rows, 1),
            ("--min-sessions", self.min_sessions, 1),
            ("--folds", self.folds, 2),
        ):
            if value < least:
                return f"{name} must be at least {least}"
        if self.clip <= 0:
            return "--clip must be positive"
        if self.l2 < 0 or self.prior_strength < 0 or self.select_tolerance < 0:
            return "--l2, --prior-strength and --select-tolerance cannot be negative"
        return None

    def prm_config(self) -> PrmConfig:
        """The PRM's part of this configuration."""
        return PrmConfig(
            kind=self.prm,
            l2=self.l2,
            max_rows=self.max_fit_rows,
            seed=self.seed,
            model=self.prm_model,
            endpoint=self.judge_endpoint,
            judge_model=self.judge_model,
        )
