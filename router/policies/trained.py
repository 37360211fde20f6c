"""Policies that load a trained helper artifact: `learned` and `table`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.artifacts import ArtifactError, HelperArtifact, load_artifact
from router.decision import BASE, BudgetView, Decision
from router.embedding import HashedNgrams
from router.policies.base import (
    Policy,
    PolicyConfigError,
    PolicyContext,
    register_policy,
    take_params,
)
from router.state import FEATURE_NAMES, StepState


class _ArtifactPolicy:
    def __init__(self, artifact: HelperArtifact, intervention: str) -> None:
        self.artifact = artifact
        self.policy_id = artifact.policy_id
        self._intervention = intervention
        # A neural embedding takes milliseconds: off the event loop, under the decision timeout.
        embedding = artifact.scorer.embedding
        self.inline = embedding is None or isinstance(embedding, HashedNgrams)


class Learned(_ArtifactPolicy):
    """Escalates when the helper's P(escalating pays off) reaches its threshold for the
    remaining budget."""

    thresholded = True

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        remaining = budget.remaining
        score = self.artifact.scorer.score(state.features, state.messages, remaining)
        escalate = score >= self.artifact.threshold(remaining)
        return Decision(
            self._intervention if escalate else BASE, score, 1.0, self.policy_id, "learned"
        )


class Table(_ArtifactPolicy):
    """The dynamic-programming policy: the PRM's P(success) binned, looked up with the
    remaining budget. Its logged score is the PRM's P(failure)."""

    thresholded = False

    def decide(self, state: StepState, budget: BudgetView) -> Decision:
        remaining = budget.remaining
        success = self.artifact.scorer.score(state.features, state.messages, remaining)
        escalate = self.artifact.table_action(success, remaining) == 1
        return Decision(
            self._intervention if escalate else BASE, 1.0 - success, 1.0, self.policy_id, "table"
        )


def _directory(kind: str, params: Mapping[str, Any]) -> str:
    """The helper directory a policy's table names, checked without reading it."""
    checked = take_params(kind, params, {"artifact": str})
    if "artifact" not in checked:
        raise PolicyConfigError(f'policy {kind!r} needs artifact = "<helper directory>"')
    return str(checked["artifact"])


def _load(kind: str, params: Mapping[str, Any]) -> HelperArtifact:
    directory = _directory(kind, params)
    try:
        artifact = load_artifact(directory, FEATURE_NAMES)
    except ArtifactError as exc:
        raise PolicyConfigError(f"policy {kind!r}: {exc}") from None
    if artifact.kind != kind:
        raise PolicyConfigError(f"policy {kind!r}: {directory} holds a {artifact.kind!r} helper")
    return artifact


def _check_learned(params: Mapping[str, Any], context: PolicyContext) -> None:
    _directory("learned", params)


def _check_table(params: Mapping[str, Any], context: PolicyContext) -> None:
    _directory("table", params)


@register_policy("learned", check=_check_learned)
def _learned(params: Mapping[str, Any], context: PolicyContext) -> Policy:
    return Learned(_load("learned", params), context.intervention)


@register_policy("table", check=_check_table)
def _table(params: Mapping[str, Any], context: PolicyContext) -> Policy:
    return Table(_load("table", params), context.intervention)
