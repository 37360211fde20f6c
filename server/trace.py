"""StepTrace: everything one request learns on its way through the proxy.

The response headers and the step record are both read off the trace, so they can never
disagree, and a step that fails half-way still logs what it knew.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.decision import Decision

SCHEMA_VERSION = 1


@dataclass(slots=True)
class UpstreamCall:
    name: str
    model: str
    status: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    span: Any = None  # its OpenTelemetry span while it runs, when telemetry is on

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "status": self.status,
            "latency_ms": _round(self.latency_ms),
            "ttft_ms": _round(self.ttft_ms),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            **({"error": self.error} if self.error else {}),
        }


@dataclass(slots=True)
class StepTrace:
    request_id: str
    tenant: str = ""
    session: str = ""
    one_step: bool = False
    step: int | None = None
    route: str | None = None
    action: str = "none"  # "none" until the request reaches an upstream
    budget_limit: int | None = None
    budget_before: int | None = None
    budget_after: int | None = None
    features: dict[str, float] = field(default_factory=dict)
    decision: Decision | None = None
    threshold: float | None = None  # the calibrated threshold the score was compared with
    shadow: Decision | None = None
    failed_intervention: UpstreamCall | None = None
    draft: UpstreamCall | None = None  # the base model's draft, with decision timing after_draft
    draft_served: bool = False
    draft_message: Mapping[str, Any] | None = None  # the draft's answer (for agreement checks)
    intervention: dict[str, Any] | None = None  # how a best-of-N step chose its answer
    upstream: UpstreamCall | None = None
    response: dict[str, Any] | None = None
    ts: float = field(default_factory=time.time)
    span: Any = None  # the step's OpenTelemetry span, when telemetry is on (server/otel.py)

    def headers(self) -> list[tuple[bytes, bytes]]:
        remaining = "none" if self.budget_after is None else str(self.budget_after)
        headers = [
            (b"x-escalator-action", self.action.encode()),
            (b"x-escalator-budget-remaining", remaining.encode()),
        ]
        if self.decision is not None:
            headers.append((b"x-escalator-score", f"{self.decision.p_escalate:.4f}".encode()))
        return headers

    def record(self, messages: Any, capture_content: bool, config_hash: str) -> dict[str, Any]:
        state: dict[str, Any] = {"features": self.features}
        if capture_content:
            state["messages"] = messages
        record: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "kind": "step",
            "id": self.request_id,
            "ts": round(self.ts, 3),
            "tenant": self.tenant,
            "session": self.session,
            "step": self.step,
            "route": self.route,
            "state": state,
            "decision": self._decision_record(),
            "upstream": self.upstream.record() if self.upstream else None,
            "config_hash": config_hash,
        }
        if self.one_step:
            record["one_step"] = True
        if self.draft is not None:
            record["draft"] = {**self.draft.record(), "served": self.draft_served}
        if self.intervention is not None:
            record["intervention"] = self.intervention
        if self.failed_intervention is not None:
            record["failed_intervention"] = self.failed_intervention.record()
        if capture_content:
            record["response"] = self.response
        return record

    def _decision_record(self) -> dict[str, Any] | None:
        d = self.decision
        if d is None:
            return None
        return {
            "action": d.action,
            "p_escalate": round(d.p_escalate, 6),
            "propensity": round(d.propensity, 6),
            "explored": d.explored,
            "policy": d.policy_id,
            "reason": d.reason,
            "budget_before": self.budget_before,
            "budget_after": self.budget_after,
            **({"threshold": round(self.threshold, 6)} if self.threshold is not None else {}),
            **({"shadow": _shadow_record(self.shadow)} if self.shadow is not None else {}),
        }


def outcome_record(
    tenant: str, session: str, success: bool, reward: float | None, config_hash: str
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "kind": "outcome",
        "ts": round(time.time(), 3),
        "tenant": tenant,
        "session": session,
        "success": success,
        "reward": reward if reward is not None else float(success),
        "config_hash": config_hash,
    }


def feedback_record(
    tenant: str, session: str, step: int, request_id: str | None, reward: float, config_hash: str
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "kind": "feedback",
        "ts": round(time.time(), 3),
        "tenant": tenant,
        "session": session,
        "step": step,
        "request_id": request_id,
        "reward": reward,
        "config_hash": config_hash,
    }


def _shadow_record(d: Decision) -> dict[str, Any]:
    return {
        "action": d.action,
        "p_escalate": round(d.p_escalate, 6),
        "policy": d.policy_id,
        "reason": d.reason,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
