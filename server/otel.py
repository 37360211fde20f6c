"""OpenTelemetry traces: a span per agent step and a child span per upstream call.

Loaded only when `[telemetry]` is configured (the `otel` extra); with it absent nothing here
is imported and the proxy pays nothing. The step span continues the agent's W3C trace (its
`traceparent` and `tracestate`), carries the step's decision as `escalator.*` attributes,
and each upstream call's span follows the GenAI semantic conventions; the upstream is sent
the call span's `traceparent`, so a model server that traces joins the same trace.

Spans are exported over OTLP/HTTP by the SDK's batch processor, on its own thread: the event
loop only records them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yarl import URL

from router.openai_shapes import choices_of, finish_reason
from server.settings import TelemetrySettings
from server.trace import StepTrace, UpstreamCall
from server.upstreams import Upstream

# The agent's steps: a span each. Other requests (models, sessions, metrics) get none.
STEP_PATHS = {"/v1/chat/completions": "chat.completions", "/v1/responses": "responses"}
# The wire API the upstreams speak: OpenAI's, whoever serves it (vLLM, llama.cpp, OpenAI).
PROVIDER = "openai"
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class Tracing:
    """The tracer, its exporter, and the spans of steps and upstream calls."""

    def __init__(self, settings: TelemetrySettings, version: str = "") -> None:
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": version}
        )
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio))
        )
        exporter = OTLPSpanExporter(
            endpoint=settings.otlp_endpoint, timeout=settings.export_timeout_s
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        # Not the global provider: the proxy's spans are its own, whatever else runs here.
        self.tracer = self.provider.get_tracer("escalator", version)
        self.propagator = TraceContextTextMapPropagator()
        self._servers: dict[str, tuple[str, int | None]] = {}

    # -- steps ------------------------------------------------------------------------------

    def start_step(self, api: str, headers: list[tuple[bytes, bytes]]) -> Span:
        """A step's span, in the agent's trace when its request carries one."""
        carrier = {
            name.decode(): value.decode("latin-1")
            for name, value in headers
            if name in _TRACE_HEADERS
        }
        parent = self.propagator.extract(carrier) if carrier else None
        return self.tracer.start_span(
            "step", context=parent, kind=SpanKind.SERVER, attributes={"escalator.api": api}
        )

    def end_step(
        self, trace: StepTrace, status: int | None, error: BaseException | None = None
    ) -> None:
        span = trace.span
        if span is None:
            return
        for call in (trace.draft, trace.failed_intervention, trace.upstream):
            if call is not None and call.span is not None:  # the step was cut short
                self.end_call(call, error="cancelled")
        if span.is_recording():
            if trace.route is not None:
                span.update_name(f"step {trace.route}")
            span.set_attributes(step_attributes(trace))
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.set_attribute("error.type", type(error).__qualname__)
            elif status is None or status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status or "no_response"))
        span.end()

    # -- upstream calls ---------------------------------------------------------------------

    def start_call(
        self,
        trace: StepTrace,
        call: UpstreamCall,
        upstream: Upstream,
        role: str,
        request: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Open `call`'s span under the step's; return the headers that carry it upstream."""
        parent = otel_trace.set_span_in_context(trace.span) if trace.span is not None else None
        address, port = self._server(upstream)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,  # the older name, still read by many backends
            "gen_ai.request.model": call.model,
            "server.address": address,
            "escalator.upstream": call.name,
            "escalator.call": role,
        }
        if port is not None:
            attributes["server.port"] = port
        if request is not None:
            attributes.update(request_attributes(request))
        span = self.tracer.start_span(
            f"chat {call.model}", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        call.span = span
        headers: dict[str, str] = {}
        self.propagator.inject(headers, context=otel_trace.set_span_in_context(span))
        return headers

    def end_call(
        self,
        call: UpstreamCall,
        answer: Mapping[str, Any] | None = None,
        error: str | None = None,
        response_model: str | None = None,
    ) -> None:
        """Close `call`'s span with what the call learned (once; later calls do nothing)."""
        span = call.span
        if span is None:
            return
        call.span = None
        if span.is_recording():
            span.set_attributes(call_attributes(call, answer, response_model))
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, call.error))
                span.set_attribute("error.type", error)
        span.end()

    def _server(self, upstream: Upstream) -> tuple[str, int | None]:
        server = self._servers.get(upstream.name)
        if server is None:
            url = URL(upstream.settings.url)
            server = self._servers[upstream.name] = (url.host or "", url.port)
        return server

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter (blocks: run it off the event loop)."""
        self.provider.shutdown()


def step_attributes(trace: StepTrace) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "escalator.request_id": trace.request_id,
        "escalator.tenant": trace.tenant,
        "escalator.session": trace.session,
        "escalator.action": trace.action,
    }
    if trace.route is not None:
        attributes["escalator.route"] = trace.route
    if trace.step is not None:
        attributes["escalator.step"] = trace.step
    if trace.budget_before is not None:
        attributes["escalator.budget.before"] = trace.budget_before
    if trace.budget_after is not None:
        attributes["escalator.budget.after"] = trace.budget_after
    decision = trace.decision
    if decision is not None:
        attributes["escalator.decision.action"] = decision.action
        attributes["escalator.decision.p_escalate"] = decision.p_escalate
        attributes["escalator.decision.propensity"] = decision.propensity
        attributes["escalator.decision.explored"] = decision.explored
        attributes["escalator.decision.policy"] = decision.policy_id
        attributes["escalator.decision.reason"] = decision.reason
    if trace.draft is not None:
        attributes["escalator.draft_served"] = trace.draft_served
    return attributes


def request_attributes(request: Mapping[str, Any]) -> dict[str, Any]:
    """The GenAI request parameters the client set (only well-typed ones)."""
    attributes: dict[str, Any] = {}
    for key, name in (
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("max_output_tokens", "gen_ai.request.max_tokens"),
        ("n", "gen_ai.request.choice.count"),
    ):
        value = request.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    return attributes


def call_attributes(
    call: UpstreamCall, answer: Mapping[str, Any] | None, response_model: str | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if isinstance(call.prompt_tokens, int):
        attributes["gen_ai.usage.input_tokens"] = call.prompt_tokens
    if isinstance(call.completion_tokens, int):
        attributes["gen_ai.usage.output_tokens"] = call.completion_tokens
    if call.status is not None:
        attributes["escalator.upstream.status"] = call.status
    if call.ttft_ms is not None:
        attributes["escalator.upstream.ttft_ms"] = call.ttft_ms
    if answer is not None:
        response_model = response_model or answer.get("model")
        if isinstance(answer.get("id"), str):
            attributes["gen_ai.response.id"] = answer["id"]
        reasons = [r for c in choices_of(answer) if (r := finish_reason(c)) is not None]
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
    if isinstance(response_model, str):
        attributes["gen_ai.response.model"] = response_model
    return attributes


class StepSpans:
    """ASGI middleware, installed only when telemetry is on: a span around each step's
    request (a stream's included, until its last byte), ended with the step's trace."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = STEP_PATHS.get(scope["path"]) if scope["type"] == "http" else None
        if api is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        trace: StepTrace = scope["state"]["trace"]
        trace.span = self.tracing.start_step(api, scope["headers"])
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            self.tracing.end_step(trace, status, exc)
            raise
        self.tracing.end_step(trace, status)
