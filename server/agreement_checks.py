"""Agreement checks on the proxy's side: after an escalated step's answer went out, the base
model's answer to the same request, compared (server/agreement.py) and logged.

Where the step had a draft (the base model's answer, asked before deciding), the draft is
the base answer and nothing more is asked. Otherwise the base model is asked in the
background: the agent waits for nothing. At most `MAX_CHECKS_IN_FLIGHT` checks wait on the
base model at once; past it a check is skipped and counted, rather than piling up behind a
slow base model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

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

# The base model asked for a complete answer to `request`, measured in the call:
# (caller, route, request, call, trace, role) -> its reply.
AskBase = Callable[
    [Caller, RoutePlan, dict[str, Any], UpstreamCall, StepTrace, str], Awaitable[UpstreamReply]
]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class AgreementChecks:
    def __init__(
        self, ask_base: AskBase, spawn: Spawn, steplog: StepLog, metrics: Metrics, config_hash: str
    ) -> None:
        self.ask_base = ask_base
        self.spawn = spawn
        self.steplog = steplog
        self.metrics = metrics
        self.config_hash = config_hash
        self.in_flight = 0

    def after_step(
        self, caller: Caller, route: RoutePlan | None, body: dict[str, Any], trace: StepTrace
    ) -> None:
        """On an escalated step of a route whose answer went out, compare that answer with
        the base model's (the draft where there is one, else a base call in the background)."""
        call = trace.upstream
        if (
            route is None
            or not route.agreement_checks
            or trace.one_step
            or trace.step is None
            or trace.action in (BASE, "none")
            or trace.response is None
            or call is None
            or call.error is not None
        ):
            return
        if trace.draft_message is not None:
            self._log(caller, trace, trace.draft_message, trace.draft)
            return
        if self.in_flight >= MAX_CHECKS_IN_FLIGHT:  # a slow base model: shed, not pile up
            self.metrics.agreement_checks.labels(caller.tenant, route.name, "skipped").inc()
            return
        self.in_flight += 1
        self.spawn(self._ask(caller, route, body, trace))

    async def _ask(
        self, caller: Caller, route: RoutePlan, body: dict[str, Any], trace: StepTrace
    ) -> None:
        skipped = ("stream", "stream_options", "n")
        request = {k: v for k, v in body.items() if k not in skipped}
        call = UpstreamCall(route.base.upstream, route.base.model)
        try:
            reply = await self.ask_base(caller, route, request, call, trace, "agreement_check")
        except EscalatorError:
            self.metrics.agreement_checks.labels(caller.tenant, route.name, "failed").inc()
            return
        finally:
            self.in_flight -= 1
        self._log(caller, trace, first_message(reply.data), call)

    def _log(self, caller: Caller, trace: StepTrace, base: Json, call: UpstreamCall | None) -> None:
        assert trace.step is not None
        value = agreement(trace.response, base)
        result = "agree" if value == 1.0 else "disagree"
        self.metrics.agreement_checks.labels(caller.tenant, trace.route or "", result).inc()
        record = agreement_record(
            caller.tenant,
            trace.session,
            trace.step,
            trace.request_id,
            value,
            call.record() if call is not None else {},
            self.config_hash,
        )
        self.steplog.submit(record)
