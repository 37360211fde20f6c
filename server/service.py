"""The per-step service: one chat request through the numbered steps of DESIGN.md.

1. tenant (done by the caller: see server/tenancy.py)   5. budget
2. session                                            6. upstream
3. model → route or pass-through                      7. log
4. decision                                           8. metrics and headers
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from router.budget import (
    ONE_STEP_TTL_S,
    BudgetStore,
    Reservation,
    Scope,
    session_key,
    tenant_day_key,
)
from router.decision import BASE, Decision
from router.openai_shapes import Json, first_message, usage_of, usage_tokens
from server.agreement_checks import AgreementChecks, Ask, Asked
from server.errors import (
    EscalatorError,
    NotFound,
    ServiceUnavailable,
    UpstreamRejected,
    UpstreamTimeout,
)
from server.interventions import best_of_n, with_reasoning
from server.metrics import Metrics
from server.policy_calls import Decider
from server.route_plans import RoutePlan, Target, build_plans
from server.settings import BestOfNIntervention, ReasoningIntervention, Settings
from server.steplog import StepLog
from server.streaming import ChunkSource, CompletionStream, SseRelay, StreamTranscript
from server.tenancy import Caller
from server.trace import StepTrace, UpstreamCall
from server.upstreams import UpstreamReply, Upstreams
from server.wire import StepWire

if TYPE_CHECKING:  # the `otel` extra: imported only where telemetry is configured
    from server.otel import Tracing

log = logging.getLogger("escalator.service")

_DAY_SCOPE_TTL_S = 2 * 86_400


@dataclass(slots=True)
class StepReply:
    """What the HTTP layer sends: a JSON body, or a stream of SSE bytes. `native`: the answer
    is in the shape of the step's wire (its target spoke it), not a chat completion."""

    body: bytes | None = None
    stream: SseRelay | None = None
    native: bool = False


@dataclass(slots=True)
class _Step:
    """One chat step on its way: who asked and what (`raw`: the body's bytes, sent as they
    came when the model is passed through), its route (None: passed through) and the wire it
    rides, what the proxy learns of it (the trace), and the intervention's budget units it
    holds until they are settled."""

    caller: Caller
    body: dict[str, Any]
    raw: bytes
    trace: StepTrace
    route: RoutePlan | None
    wire: StepWire | None
    reservation: Reservation | None = None
    finished: bool = False


class ChatService:
    def __init__(
        self,
        settings: Settings,
        plans: dict[str, RoutePlan],
        store: BudgetStore,
        upstreams: Upstreams,
        steplog: StepLog,
        metrics: Metrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing  # None: telemetry off, and every span below is skipped
        self.store = store
        self.upstreams = upstreams
        self.steplog = steplog
        self.metrics = metrics
        self.routes = plans  # built at start (server/route_plans.py), rebuilt on a helper reload
        self.passthrough = settings.passthrough_models()
        self.config_hash = settings.config_hash()
        self.decider = Decider(metrics)
        self._background: set[asyncio.Task[None]] = set()
        asks: dict[Asked, Ask] = {
            "base": self._check_with_base,
            "intervention": self._check_with_intervention,
        }
        self.agreement_checks = AgreementChecks(
            asks, self.spawn, steplog, metrics, self.config_hash
        )

    def reload_helpers(self) -> list[str]:
        """Re-read every route's helper artifacts and swap them in all at once; on any invalid
        artifact raise PolicyConfigError and keep the running helpers."""
        routes = build_plans(self.settings)
        self.routes = routes  # one assignment: a request sees the old plans or the new ones
        return [f"{name}: {plan.policy.policy_id}" for name, plan in routes.items()]

    # -- the request flow -------------------------------------------------------------------

    async def chat(
        self,
        caller: Caller,
        body: dict[str, Any],
        raw: bytes,
        trace: StepTrace,
        session: str | None,
        wire: StepWire | None = None,
    ) -> StepReply:
        """One step of `session` (None: a session of this step alone, named by its request id).
        With a `wire`, targets that speak it are sent its request instead of `body` (which
        still gives the step's transcript), and answer in its shape.

        Decide and reserve, answer, finish: a body's step is finished here, a stream's when
        the stream ends, and a step that fails or is cancelled on the way as undelivered."""
        trace.session = session or trace.request_id  # 2. session
        trace.one_step = session is None
        route, target = self._resolve(body["model"])  # 3. model
        await self._begin_step(caller, route, trace)
        trace.route = route.name if route else None
        step = _Step(caller, body, raw, trace, route, wire)
        try:
            draft = None
            if route is not None:  # 4. decision, 5. budget
                target, draft = await self._decide_and_reserve(step, route)
            answer, native = await self._answer(step, target, draft)  # 6. upstream
            if isinstance(answer, UpstreamReply):
                self._read_reply(caller, answer, trace, native)
                self._finish(step, delivered=True)  # 7. log
                return StepReply(body=answer.body, native=native is not None)
            relay = self._relay(step, answer, native)  # finishes the step when the stream ends
            return StepReply(stream=relay, native=native is not None)
        except BaseException:  # failed, or cancelled (the client went away), before answering
            self._finish(step, delivered=False)
            raise

    async def complete(self, caller: Caller, body: dict[str, Any], trace: StepTrace) -> StepReply:
        """`/v1/completions`: pass-through to the model (a route name means its base model);
        no decision, no step, no log record."""
        route, target = self._resolve(body["model"])
        trace.route = route.name if route else None
        payload = _with_model(body, target.model)
        upstream = self.upstreams[target.upstream]
        call = trace.upstream = UpstreamCall(upstream.name, target.model)
        try:
            if body.get("stream") is True:
                stream = await upstream.open_stream("completions", payload)
            else:
                reply = await upstream.complete("completions", payload)
        except EscalatorError as exc:
            self.metrics.upstream_errors.labels(upstream.name, _error_kind(exc)).inc()
            raise
        trace.action = BASE
        if body.get("stream") is True:

            def finish(transcript: StreamTranscript) -> None:
                if transcript.error is not None:
                    self.metrics.upstream_errors.labels(call.name, "broken_stream").inc()
                self._count_usage(caller, call, transcript.usage)

            return StepReply(stream=SseRelay(stream, StreamTranscript(stream.started), finish))
        self.metrics.upstream_latency.labels(call.name).observe(reply.latency_ms / 1000)
        self._count_usage(caller, call, usage_of(reply.data))
        return StepReply(body=reply.body)

    def _resolve(self, model: str) -> tuple[RoutePlan | None, Target]:
        route = self.routes.get(model)
        if route is not None:
            return route, route.base
        upstream = self.passthrough.get(model)
        if upstream is None:
            raise NotFound(
                f"The model '{model}' does not exist: it is neither a route nor a model of a "
                "configured upstream (see GET /v1/models)",
                param="model",
                code="model_not_found",
            )
        return None, Target(BASE, upstream, model)

    async def _begin_step(self, caller: Caller, route: RoutePlan | None, trace: StepTrace) -> None:
        # The step's request id goes with it, so feedback can name the step (a one-step
        # session is not stored at all).
        request_id = None if trace.one_step else trace.request_id
        try:
            start = await self.store.begin_step(
                session_key(caller.tenant, trace.session), self._session_ttl_s(trace), request_id
            )
        except Exception as exc:  # the store's client raises its own error types
            # Its message may name the store's address: the operator's log only.
            log.warning("budget store unavailable at the start of a step: %r", exc)
            raise ServiceUnavailable("the budget store is unavailable; retry later") from None
        limit = caller.settings.interventions_per_session
        trace.step = start.step
        trace.budget_limit = limit
        trace.budget_before = trace.budget_after = max(limit - start.used, 0)
        if start.step == 0:
            self.metrics.sessions.labels(
                caller.tenant, route.name if route else "passthrough"
            ).inc()

    def _session_ttl_s(self, trace: StepTrace) -> int:
        """How long the store keeps the session: a one-step session (a request without a
        session id) is never stored, so such requests leave nothing behind."""
        return ONE_STEP_TTL_S if trace.one_step else self.settings.storage.session_ttl_s

    async def _decide_and_reserve(
        self, step: _Step, route: RoutePlan
    ) -> tuple[Target, UpstreamReply | None]:
        """4. decision and 5. budget: where the step goes (an intervention's units reserved on
        `step`), and the base model's draft where the route decides after seeing one."""
        caller, trace = step.caller, step.trace
        draft = None
        if route.after_draft:  # the base model answers first; the helper sees it
            draft = await self._draft(caller, route, step.body, trace)
        decision = await self.decider.decide(
            route, caller, step.body, trace, draft.data if draft else None
        )
        target = route.base
        if decision.escalates:
            target, step.reservation, decision = await self._reserve(route, caller, decision, trace)
        if decision.reason == "budget_exhausted":
            self.metrics.budget_denials.labels(caller.tenant, route.name).inc()
        self.decider.taken(route, caller, decision)
        trace.decision = decision
        return target, draft

    async def _reserve(
        self, route: RoutePlan, caller: Caller, decision: Decision, trace: StepTrace
    ) -> tuple[Target, Reservation | None, Decision]:
        target, cost = route.intervention(decision.action)
        tenant = caller.settings
        scopes = [
            Scope(
                session_key(caller.tenant, trace.session),
                tenant.interventions_per_session,
                self._session_ttl_s(trace),
            )
        ]
        if tenant.interventions_per_day is not None:
            day = time.strftime("%Y-%m-%d", time.gmtime())
            scopes.append(
                Scope(
                    tenant_day_key(caller.tenant, day),
                    tenant.interventions_per_day,
                    _DAY_SCOPE_TTL_S,
                )
            )
        try:
            reservation = await self.store.reserve(scopes, cost)
        except Exception:  # the store's client raises its own error types
            log.exception("budget store failed to reserve; the base model answers")
            failed = replace(decision, action=BASE, propensity=1.0, reason="budget_store_error")
            return route.base, None, failed
        if reservation is None:
            denied = replace(decision, action=BASE, propensity=1.0, reason="budget_exhausted")
            return route.base, None, denied
        trace.budget_after = max((trace.budget_before or 0) - cost, 0)
        return target, reservation, replace(decision, action=target.kind)

    async def _answer(
        self, step: _Step, target: Target, draft: UpstreamReply | None
    ) -> tuple[UpstreamReply | ChunkSource, StepWire | None]:
        """6. upstream: the target's answer, and the step's wire where the target speaks it.
        An intervention that fails is refunded and the base model answers instead."""
        try:
            return await self._ask(step, target, draft)
        except EscalatorError:
            if step.reservation is None:
                raise
        assert step.route is not None  # only a route reserves
        self._settle(step, kept=False)
        trace = step.trace
        trace.failed_intervention, trace.upstream = trace.upstream, None
        return await self._ask(step, step.route.base, draft)

    async def _ask(
        self, step: _Step, target: Target, draft: UpstreamReply | None
    ) -> tuple[UpstreamReply | ChunkSource, StepWire | None]:
        """The answer of `target`: the draft where it is the base model and has given one."""
        native = None
        if draft is not None and target.kind == BASE:
            answer = self._serve_draft(draft, step.body, step.trace)
        else:
            native = _spoken(step.wire, target)
            raw = step.raw if step.route is None else None
            answer = await self._call(step.caller, target, step.body, raw, step.trace, native)
        step.trace.action = target.kind
        return answer, native

    async def _call(
        self,
        caller: Caller,
        target: Target,
        body: dict[str, Any],
        raw: bytes | None,
        trace: StepTrace,
        wire: StepWire | None = None,
        role: str = "answer",
    ) -> UpstreamReply | ChunkSource:
        """Send the step to its target. `raw` is the client's body, sent as it came when the
        model is passed through; a `wire` the target speaks sends the wire's request. `role`
        names the call in telemetry: the step's answer, or an agreement check."""
        upstream = self.upstreams[target.upstream]
        call = trace.upstream = UpstreamCall(upstream.name, target.model)
        stream = body.get("stream") is True
        spec = target.intervention
        headers = None
        if self.tracing is not None:
            params = body
            if isinstance(spec, BestOfNIntervention):
                role, params = "best_of_n", {"n": spec.n, "temperature": spec.temperature}
            headers = self.tracing.start_call(trace, call, upstream, role, params)
        try:
            if isinstance(spec, BestOfNIntervention):
                chosen = await best_of_n(self.upstreams, spec, body, target.prm, headers)
                trace.intervention = chosen.record
                result: UpstreamReply | ChunkSource = chosen.reply
                if stream:
                    self._read_reply(caller, chosen.reply, trace)  # sampled: measured now
                    result = CompletionStream(upstream, chosen.reply.data, body)
            else:
                path = "chat/completions"
                if wire is not None:
                    path, payload = wire.path, wire.payload(target)
                elif raw is not None:  # passed through: the client's bytes, unchanged
                    payload = raw
                else:
                    request = {**body, "model": target.model}
                    if isinstance(spec, ReasoningIntervention):
                        request = with_reasoning(request, spec)
                    payload = orjson.dumps(request)
                if stream:
                    result = await upstream.open_stream(path, payload, headers)
                else:
                    result = await upstream.complete(path, payload, headers)
        except EscalatorError as exc:
            call.status = exc.status
            call.error = exc.message
            self.metrics.upstream_errors.labels(upstream.name, _error_kind(exc)).inc()
            if self.tracing is not None:
                self.tracing.end_call(call, error=_error_kind(exc))
            raise
        call.status = 200
        return result

    async def _draft(
        self, caller: Caller, route: RoutePlan, body: dict[str, Any], trace: StepTrace
    ) -> UpstreamReply:
        """The base model's complete answer, with token logprobs for the helper to read."""
        request = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        request["logprobs"] = True
        call = trace.draft = UpstreamCall(route.base.upstream, route.base.model)
        try:
            draft = await self._ask_base_model(caller, route, request, call, trace, "draft")
        except EscalatorError:
            trace.upstream = call
            raise
        trace.draft_message = first_message(draft.data)
        return draft

    async def _ask_base_model(
        self,
        caller: Caller,
        route: RoutePlan,
        request: dict[str, Any],
        call: UpstreamCall,
        trace: StepTrace,
        role: str,
    ) -> UpstreamReply:
        """A complete (non-stream) answer from the route's base model, measured and counted
        in `call`: a draft, or an agreement check (`role`)."""
        upstream = self.upstreams[route.base.upstream]
        payload = orjson.dumps({**request, "model": route.base.model})
        headers = None
        if self.tracing is not None:
            headers = self.tracing.start_call(trace, call, upstream, role, request)
        try:
            reply = await upstream.complete("chat/completions", payload, headers)
        except EscalatorError as exc:
            call.status, call.error = exc.status, exc.message
            self.metrics.upstream_errors.labels(upstream.name, _error_kind(exc)).inc()
            if self.tracing is not None:
                self.tracing.end_call(call, error=_error_kind(exc))
            raise
        call.status, call.latency_ms = 200, reply.latency_ms
        self.metrics.upstream_latency.labels(upstream.name).observe(reply.latency_ms / 1000)
        self._count_usage(caller, call, usage_of(reply.data))
        if self.tracing is not None:
            self.tracing.end_call(call, reply.data)
        return reply

    async def _check_with_base(
        self, caller: Caller, route: RoutePlan, request: dict[str, Any], trace: StepTrace
    ) -> tuple[UpstreamReply, UpstreamCall]:
        """An agreement check's base answer (server/agreement_checks.py)."""
        call = UpstreamCall(route.base.upstream, route.base.model)
        reply = await self._ask_base_model(caller, route, request, call, trace, "agreement_check")
        return reply, call

    async def _check_with_intervention(
        self, caller: Caller, route: RoutePlan, request: dict[str, Any], trace: StepTrace
    ) -> tuple[UpstreamReply, UpstreamCall]:
        """An agreement check's intervention answer, the route's primary intervention asked
        and measured as an escalated step's answer is; on a trace of its own, so the step's
        (already logged) is left as it was."""
        assert route.primary is not None
        target, _ = route.intervention(route.primary)
        check = StepTrace(trace.request_id, caller.tenant, trace.session, span=trace.span)
        reply = await self._call(caller, target, request, None, check, role="agreement_check")
        assert isinstance(reply, UpstreamReply)  # the request does not stream
        self._read_reply(caller, reply, check)
        assert check.upstream is not None
        return reply, check.upstream

    def _serve_draft(
        self, draft: UpstreamReply, body: dict[str, Any], trace: StepTrace
    ) -> UpstreamReply | ChunkSource:
        """The draft as the step's answer, shaped as the client asked for it."""
        trace.upstream, trace.draft_served = trace.draft, True
        data = draft.data
        if not body.get("logprobs"):  # asked for by the proxy, not by the client
            data = {**data, "choices": [{**c, "logprobs": None} for c in data["choices"]]}
        if body.get("stream") is True:
            assert trace.draft is not None
            return CompletionStream(self.upstreams[trace.draft.name], data, body)
        raw = draft.body if data is draft.data else orjson.dumps(data)
        return UpstreamReply(raw, data, draft.latency_ms)

    def _read_reply(
        self,
        caller: Caller,
        reply: UpstreamReply,
        trace: StepTrace,
        wire: StepWire | None = None,
    ) -> None:
        call = trace.upstream
        assert call is not None
        if call.latency_ms is None:  # each upstream call is measured once (a draft already was)
            call.latency_ms = reply.latency_ms
            self.metrics.upstream_latency.labels(call.name).observe(reply.latency_ms / 1000)
        if wire is not None:
            trace.response, usage = wire.read(reply.data)
            self._count_usage(caller, call, usage)
        else:
            self._count_usage(caller, call, usage_of(reply.data))
            message = first_message(reply.data)
            trace.response = {
                "content": message.get("content"),
                "tool_calls": message.get("tool_calls"),
            }
        if self.tracing is not None:
            self.tracing.end_call(call, reply.data)

    def _relay(self, step: _Step, source: ChunkSource, native: StepWire | None) -> SseRelay:
        """A streamed answer, relayed as it arrives; the step is finished when the stream
        ends, however it ends, as delivered if any of the answer reached the client."""

        def finish(transcript: StreamTranscript) -> None:
            self._read_transcript(step, source, transcript)
            self._finish(step, delivered=transcript.delivered)

        started = source.started
        transcript = native.transcript(started) if native else StreamTranscript(started)
        return SseRelay(source, transcript, finish)

    def _read_transcript(
        self, step: _Step, source: ChunkSource, transcript: StreamTranscript
    ) -> None:
        trace = step.trace
        call = trace.upstream
        assert call is not None
        if not isinstance(source, CompletionStream):  # a complete answer was measured on arrival
            self._observe_stream(call, transcript)
        if transcript.error is not None:
            call.error = transcript.error.message
            self.metrics.upstream_errors.labels(call.name, "broken_stream").inc()
        elif not transcript.done:
            call.error = "client disconnected"
        self._count_usage(step.caller, call, transcript.usage)
        if self.tracing is not None:
            broken = "broken_stream" if transcript.error is not None else None
            self.tracing.end_call(call, error=broken, response_model=transcript.model)
        trace.response = transcript.response()

    # -- budget, log, metrics ---------------------------------------------------------------

    def _observe_stream(self, call: UpstreamCall, transcript: StreamTranscript) -> None:
        call.ttft_ms = transcript.first_token_ms
        call.latency_ms = transcript.finished_ms
        if transcript.first_token_ms is not None:
            self.metrics.upstream_ttft.labels(call.name).observe(transcript.first_token_ms / 1000)
        if transcript.finished_ms is not None:
            self.metrics.upstream_latency.labels(call.name).observe(transcript.finished_ms / 1000)

    def _finish(self, step: _Step, *, delivered: bool) -> None:
        """7. the end of every step, whatever its answer and however it ended (once): settle
        the budget, then log the step. The charge follows what was delivered: a client that
        hung up (or an upstream that broke off) after any of the answer reached it keeps that
        answer, so pays for it; a step that delivered nothing of it is refunded."""
        if step.finished:
            return
        step.finished = True
        self._settle(step, kept=delivered)
        self._log_step(step.caller, step.body, step.trace)

    def _settle(self, step: _Step, *, kept: bool) -> None:
        """Keep the units of an intervention whose answer (or any of a streamed one) reached
        the client; return a failed or abandoned one's."""
        reservation, step.reservation = step.reservation, None
        if reservation is None:
            return
        trace = step.trace
        kind = trace.decision.action if trace.decision else "?"
        result = "completed" if kept else "refunded"
        self.metrics.interventions.labels(step.caller.tenant, trace.route or "", kind, result).inc()
        if not kept:
            trace.budget_after = trace.budget_before
            # A task of its own: a refund must happen even when this request is being cancelled.
            self.spawn(self.store.refund(reservation))

    def _count_usage(self, caller: Caller, call: UpstreamCall, usage: Json | None) -> None:
        if usage is None or call.prompt_tokens is not None:
            return  # no usage reported, or this call's usage was counted already
        call.prompt_tokens = usage_tokens(usage, "prompt")
        call.completion_tokens = usage_tokens(usage, "completion")
        for kind, value in (("prompt", call.prompt_tokens), ("completion", call.completion_tokens)):
            if isinstance(value, int) and value > 0:
                self.metrics.tokens.labels(caller.tenant, call.name, kind).inc(value)

    def _log_step(self, caller: Caller, body: dict[str, Any], trace: StepTrace) -> None:
        d = trace.decision
        if d is not None:
            self.metrics.decisions.labels(caller.tenant, trace.route, d.action, d.reason).inc()
        record = trace.record(
            body.get("messages"), caller.settings.capture_content, self.config_hash
        )
        self.steplog.submit(record)
        self.agreement_checks.after_step(caller, self.routes.get(trace.route or ""), body, trace)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background work (refunds) before shutting down."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _spoken(wire: StepWire | None, target: Target) -> StepWire | None:
    return wire if wire is not None and wire.speaks(target) else None


def _with_model(body: dict[str, Any], model: str) -> bytes:
    return orjson.dumps({**body, "model": model})


def _error_kind(exc: EscalatorError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamRejected):
        return "rate_limited" if exc.status == 429 else "status_4xx"
    if exc.code and exc.code.startswith("upstream_5"):
        return "status_5xx"
    if exc.code == "upstream_bad_answer":
        return "bad_answer"
    return "unreachable"
