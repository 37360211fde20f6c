"""Prometheus metrics. Every name starts `escalator_`; labels are bounded (tenant, route,
action, reason, kind, upstream, status), never a session or request id."""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, disable_created_metrics

_POLICY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
)
_UPSTREAM_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


class _KnownChildren:
    """`labels()` answered from a plain dict once a label set has been seen: prometheus-client
    converts, validates and locks on every call, several times per request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[Any, ...], Any] = {}

    def labels(self, *values: Any, **by_name: Any) -> Any:
        if by_name:
            return super().labels(*values, **by_name)  # type: ignore[misc]
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = super().labels(*values)  # type: ignore[misc]
        return child


class Counter(_KnownChildren, prometheus_client.Counter):
    pass


class Gauge(_KnownChildren, prometheus_client.Gauge):
    pass


class Histogram(_KnownChildren, prometheus_client.Histogram):
    pass


class Metrics:
    """The proxy's metrics, on a registry of their own (one per app)."""

    def __init__(self) -> None:
        # `_created` series double the exposition and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "escalator_requests_total",
            "Requests answered, by the route (or pass-through) and final HTTP status.",
            ["tenant", "route", "action", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "escalator_decisions_total",
            "Helper decisions on routed steps, by the action taken and the reason.",
            ["tenant", "route", "action", "reason"],
            registry=r,
        )
        self.interventions = Counter(
            "escalator_interventions_total",
            "Interventions started, by kind and how they ended (completed or refunded).",
            ["tenant", "route", "kind", "result"],
            registry=r,
        )
        self.agreement_checks = Counter(
            "escalator_agreement_checks_total",
            "Steps whose other model was also asked (after the answer): the base model after "
            "an intervention, the intervention after a base step (`asked`), by whether it "
            "would have answered the same: agree, disagree, failed (no answer), or skipped "
            "(too many checks in flight).",
            ["tenant", "route", "asked", "result"],
            registry=r,
        )
        self.budget_denials = Counter(
            "escalator_budget_denials_total",
            "Escalations the budget refused: the step went to the base model.",
            ["tenant", "route"],
            registry=r,
        )
        self.policy_latency = Histogram(
            "escalator_policy_latency_seconds",
            "Time the helper took to decide one step.",
            ["route"],
            buckets=_POLICY_BUCKETS,
            registry=r,
        )
        self.policy_fallbacks = Counter(
            "escalator_policy_fallbacks_total",
            "Steps where the helper failed or timed out and the base model answered.",
            ["route", "reason"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "escalator_upstream_latency_seconds",
            "Upstream request duration, to the last byte.",
            ["upstream"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_ttft = Histogram(
            "escalator_upstream_ttft_seconds",
            "Time to the first streamed token from the upstream.",
            ["upstream"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "escalator_upstream_errors_total",
            "Upstream failures, by kind: unreachable, timeout, status_5xx, status_4xx, "
            "rate_limited, broken_stream, bad_answer (a 200 whose body is not JSON).",
            ["upstream", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "escalator_tokens_total",
            "Tokens reported by upstreams, by type (prompt or completion).",
            ["tenant", "upstream", "type"],
            registry=r,
        )
        self.sessions = Counter(
            "escalator_sessions_total",
            "Sessions started (first step seen).",
            ["tenant", "route"],
            registry=r,
        )
        self.outcomes = Counter(
            "escalator_outcomes_total",
            "Session outcomes reported, by success.",
            ["tenant", "success"],
            registry=r,
        )
        self.feedback = Counter(
            "escalator_feedback_total",
            "Step feedback reports recorded (a retry with a seen Idempotency-Key is not).",
            ["tenant"],
            registry=r,
        )
        self.escalation_target_rate = Gauge(
            "escalator_escalation_target_rate",
            "The tenant's target escalation rate, where calibration is on.",
            ["tenant", "route"],
            registry=r,
        )
        self.escalation_achieved_rate = Gauge(
            "escalator_escalation_achieved_rate",
            "Escalation rate achieved under calibration (moving average, this replica).",
            ["tenant", "route"],
            registry=r,
        )
        self.calibrated_threshold = Gauge(
            "escalator_calibrated_threshold",
            "The score threshold calibration has moved to (this replica).",
            ["tenant", "route"],
            registry=r,
        )
        self.shadow_decisions = Counter(
            "escalator_shadow_decisions_total",
            "Decisions of the shadow policy, by its action and whether it agrees with the "
            "acting policy on escalating.",
            ["tenant", "route", "action", "agrees"],
            registry=r,
        )
        self.log_records = Counter(
            "escalator_log_records_total",
            "Step-log records written to disk, by kind.",
            ["kind"],
            registry=r,
        )
        self.log_dropped = Counter(
            "escalator_log_dropped_total",
            "Step-log records dropped, by reason: queue_full (the write queue was full) or "
            "unwritable (JSON cannot hold the record, e.g. messages nested too deep).",
            ["reason"],
            registry=r,
        )
        for reason in ("queue_full", "unwritable"):
            self.log_dropped.labels(reason)
        self.log_queue_depth = Gauge(
            "escalator_log_queue_depth", "Step-log records waiting to be written.", registry=r
        )
        self.overload_rejections = Counter(
            "escalator_overload_rejections_total",
            "Requests answered 503 because the proxy was at a limit: requests in flight, or "
            "open connections (when every open connection had a request in flight).",
            ["limit"],
            registry=r,
        )
        self.connections_closed = Counter(
            "escalator_connections_closed_total",
            "Client connections the proxy closed: no complete request within the header "
            "timeout, or evicted (idle longest) to make room at the connection limit.",
            ["reason"],
            registry=r,
        )
        for limit in ("requests", "connections"):
            self.overload_rejections.labels(limit)
        for reason in ("header_timeout", "evicted"):
            self.connections_closed.labels(reason)
        self.open_connections = Gauge(
            "escalator_open_connections", "Client connections open now.", registry=r
        )
        self.requests_in_flight = Gauge(
            "escalator_requests_in_flight",
            "Requests being served now (the operations endpoints not counted).",
            registry=r,
        )
        self.tenant_store_errors = Counter(
            "escalator_tenant_store_errors_total",
            "Polls of the tenant store that failed (the last tenants loaded stay in use).",
            registry=r,
        )
        self.tenants_checked = Gauge(
            "escalator_tenants_checked_timestamp_seconds",
            "When this replica last confirmed its tenants and keys current (unix time).",
            registry=r,
        )
        self.info = Gauge(
            "escalator_build_info",
            "Always 1; labels carry the version and the configuration hash.",
            ["version", "config_hash"],
            registry=r,
        )
