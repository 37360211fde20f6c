"""Agreement checks on the proxy's side: after a step's answer went out, the other model's
answer to the same request, compared (server/agreement.py) and logged.

- An escalated step is put to the base model. Where the step had a draft (the base model's
  answer, asked before deciding), the draft is the base answer and nothing more is asked.
- A step the base model answered is put to the route's primary intervention, on a share of
  such steps (the tenant's `base_step_checks`; by default its exploration rate). No budget
  is spent: the answer is compared, never delivered. Checks on escalated steps alone see
  only the states some policy or coin chose to escalate, a few hundred per collection;
  these label the states the base model answered too, where the helper must find the ones
  it should not have (on the benchmark's text adventure, checking 30% of the base steps as
  well lifted how well the checks' learner ranks the hidden hard steps from AUC 0.80-0.81
  to 0.85, 2 collections, `bench/ranking.py`).

Every check is asked in the background: the agent waits for nothing. At most
`MAX_CHECKS_IN_FLIGHT` checks wait on an upstream at once; past it a check is skipped and
counted, rather than piling up behind a slow model.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from router.decision import BASE
from router.openai_shapes import Json, first_message
from server.agreement import agreement, agreement_record
from server.errors import EscalatorError
from server.metrics import Metrics
from server.route_plans import RoutePlan
from server.steplog import StepLog
from server.tenancy import Caller
from server.trace import StepTrace, UpstreamCall
from server.upstreams import UpstreamReply

MAX_CHECKS_IN_FLIGHT = 64

Asked = Literal["base", "intervention"]  # the model a check puts the step to
# That model's complete answer to `request`, measured in the call it returns:
# (caller, route, request, trace) -> (its reply, the call).
Ask = Callable[
    [Caller, RoutePlan, dict[str, Any], StepTrace], Awaitable[tuple[UpstreamReply, UpstreamCall]]
]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class AgreementChecks:
    def __init__(
        self,
        ask: dict[Asked, Ask],
        spawn: Spawn,
        steplog: StepLog,
        metrics: Metrics,
        config_hash: str,
    ) -> None:
        self.ask = ask
        self.spawn = spawn
        self.steplog = steplog
        self.metrics = metrics
        self.config_hash = config_hash
        self.rng = random.Random()  # which base steps are checked
        self.in_flight = 0

    def after_step(
        self, caller: Caller, route: RoutePlan | None, body: dict[str, Any], trace: StepTrace
    ) -> None:
        """On a step of a route whose answer went out, compare that answer with the other
        model's: the base model's after an intervention (the draft where there is one), the
        intervention's on a share of the base model's steps."""
        call = trace.upstream
        if (
            route is None
            or not route.agreement_checks
            or trace.one_step
            or trace.step is None
            or trace.action == "none"
            or trace.response is None
            or call is None
            or call.error is not None
        ):
            return
        if trace.action != BASE:
            if trace.draft_message is not None:
                self._log(caller, trace, trace.draft_message, trace.draft, "base")
            else:
                self._start(caller, route, body, trace, "base")
        elif route.primary is not None and self.rng.random() < caller.settings.base_checks:
            self._start(caller, route, body, trace, "intervention")

    def _start(
        self, caller: Caller, route: RoutePlan, body: dict[str, Any], trace: StepTrace, asked: Asked
    ) -> None:
        if self.in_flight >= MAX_CHECKS_IN_FLIGHT:  # a slow upstream: shed, not pile up
            self.metrics.agreement_checks.labels(caller.tenant, route.name, asked, "skipped").inc()
            return
        self.in_flight += 1
        self.spawn(self._ask(caller, route, body, trace, asked))

    async def _ask(
        self,
        caller: Caller,
        route: RoutePlan,
        body: dict[str, Any],
        trace: StepTrace,
        asked: Asked,
    ) -> None:
        skipped = ("stream", "stream_options", "n")
        request = {k: v for k, v in body.items() if k not in skipped}
        try:
            reply, call = await self.ask[asked](caller, route, request, trace)
        except EscalatorError:
            self.metrics.agreement_checks.labels(caller.tenant, route.name, asked, "failed").inc()
            return
        finally:
            self.in_flight -= 1
        self._log(caller, trace, first_message(reply.data), call, asked)

    def _log(
        self,
        caller: Caller,
        trace: StepTrace,
        other: Json,
        call: UpstreamCall | None,
        asked: Asked,
    ) -> None:
        assert trace.step is not None
        value = agreement(trace.response, other)
        result = "agree" if value == 1.0 else "disagree"
        self.metrics.agreement_checks.labels(caller.tenant, trace.route or "", asked, result).inc()
        record = agreement_record(
            caller.tenant,
            trace.session,
            trace.step,
            trace.request_id,
            value,
            asked,
            call.record() if call is not None else {},
            self.config_hash,
        )
        self.steplog.submit(record)
