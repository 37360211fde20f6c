"""Step 4 of the request flow: the decision.

The route's policy scores the step (inline, or on a worker thread under the route's
decision timeout; a failure falls open to the base model). A tenant with a target
escalation rate has the score compared with a calibrated threshold instead of the policy's
own. A shadow policy decides beside it without acting. Then the budget's feasibility and
the tenant's exploration finish the decision.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import Any

from router.calibration import RateCalibrator
from router.decision import BASE, BudgetView, Decision, fallback, finish_decision
from router.policies import Policy
from router.state import StepState, draft_features, extract_features
from server.metrics import Metrics
from server.route_plans import RoutePlan
from server.tenancy import Caller
from server.trace import StepTrace

_FALLBACK_REASONS = ("policy_error", "policy_timeout")


class Decider:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._rng = random.Random()
        self._calibrators: dict[tuple[str, str], RateCalibrator] = {}

    async def decide(
        self,
        route: RoutePlan,
        caller: Caller,
        body: dict[str, Any],
        trace: StepTrace,
        draft: dict[str, Any] | None = None,
    ) -> Decision:
        messages = body["messages"]
        assert trace.step is not None and trace.budget_limit is not None
        trace.features = extract_features(messages, trace.step)
        if draft is not None:
            trace.features.update(draft_features(draft))
        state = StepState(
            caller.tenant, trace.session, trace.step, route.name, messages, trace.features, draft
        )
        view = BudgetView(
            limit=trace.budget_limit,
            used=trace.budget_limit - (trace.budget_before or 0),
            cheapest_cost=route.cheapest_cost,
        )
        trace.features["prior_escalations"] = float(view.used)
        if route.primary is None:
            return Decision(BASE, 0.0, 1.0, route.policy.policy_id, "no_intervention")

        started = time.perf_counter()
        decision = await self._run(route.policy, state, view, route.decision_timeout_s)
        self.metrics.policy_latency.labels(route.name).observe(time.perf_counter() - started)
        if decision.reason in _FALLBACK_REASONS:
            self.metrics.policy_fallbacks.labels(route.name, decision.reason).inc()
        elif route.policy.thresholded and caller.settings.target_escalation_rate is not None:
            decision = self._calibrate(route, caller, decision, trace)
        if route.shadow is not None:
            await self._shadow(route, caller, state, view, decision, trace)
        return finish_decision(
            decision, view, route.primary, caller.settings.exploration, self._rng
        )

    def taken(self, route: RoutePlan, caller: Caller, decision: Decision) -> None:
        """Count the final action (after the budget) towards the achieved escalation rate."""
        calibrator = self._calibrators.get((caller.tenant, route.name))
        if calibrator is not None:
            calibrator.record(decision.escalates)
            labels = (caller.tenant, route.name)
            self.metrics.escalation_achieved_rate.labels(*labels).set(calibrator.achieved_rate)

    @staticmethod
    async def _run(
        policy: Policy, state: StepState, view: BudgetView, timeout_s: float
    ) -> Decision:
        if policy.inline:
            try:
                return policy.decide(state, view)
            except Exception:  # a broken helper must never fail the agent's step
                return fallback(policy.policy_id, "policy_error")
        try:
            return await asyncio.wait_for(asyncio.to_thread(policy.decide, state, view), timeout_s)
        except TimeoutError:
            return fallback(policy.policy_id, "policy_timeout")
        except Exception:
            return fallback(policy.policy_id, "policy_error")

    def _calibrate(
        self, route: RoutePlan, caller: Caller, decision: Decision, trace: StepTrace
    ) -> Decision:
        target = caller.settings.target_escalation_rate
        assert target is not None and route.primary is not None
        key = (caller.tenant, route.name)
        calibrator = self._calibrators.get(key)
        if calibrator is None:
            calibrator = self._calibrators[key] = RateCalibrator(target_rate=target)
            self.metrics.escalation_target_rate.labels(*key).set(target)
        trace.threshold = calibrator.threshold
        escalate = calibrator.wants_escalation(decision.p_escalate)
        self.metrics.calibrated_threshold.labels(*key).set(calibrator.threshold)
        action = route.primary if escalate else BASE
        return replace(decision, action=action, propensity=1.0, reason="calibrated")

    async def _shadow(
        self,
        route: RoutePlan,
        caller: Caller,
        state: StepState,
        view: BudgetView,
        acting: Decision,
        trace: StepTrace,
    ) -> None:
        assert route.shadow is not None
        shadow = await self._run(route.shadow, state, view, route.decision_timeout_s)
        trace.shadow = shadow
        agrees = str(shadow.escalates == acting.escalates).lower()
        self.metrics.shadow_decisions.labels(caller.tenant, route.name, shadow.action, agrees).inc()
