"""OpenTelemetry traces ([telemetry], the `otel` extra), read by a real OTLP/HTTP receiver on
127.0.0.1 that decodes what the proxy exports: a span per step, a child per upstream call
(GenAI semantic conventions), and the agent's W3C trace carried through to the upstream."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from server.settings import ConfigError, validate_settings
from tests.fake_upstream import FakeUpstream
from tests.helpers import user
from tests.otlp_receiver import CLIENT, SERVER, STATUS_ERROR, OtlpReceiver, ReceivedSpan
from tests.servers import KEYS, RunningProxy

AGENT_TRACE = secrets.token_hex(16)
AGENT_SPAN = secrets.token_hex(8)
HEADERS = {"authorization": f"Bearer {KEYS['acme']}", "x-session-id": "otel-episode"}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def traced(
    start_proxy: Callable[..., RunningProxy], receiver: OtlpReceiver
) -> Callable[..., RunningProxy]:
    def start(**sections: Any) -> RunningProxy:
        telemetry = {"otlp_endpoint": receiver.endpoint, "service_name": "escalator-test"}
        return start_proxy(telemetry=telemetry, **sections)

    return start


def traceparent(trace_id: str = AGENT_TRACE, span_id: str = AGENT_SPAN, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def exported(proxy: RunningProxy, receiver: OtlpReceiver) -> list[ReceivedSpan]:
    """Every span the proxy made: its shutdown exports what is still queued."""
    proxy.stop()
    return receiver.spans


def one(spans: list[ReceivedSpan], **attributes: Any) -> ReceivedSpan:
    found = [s for s in spans if all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (attributes, spans)
    return found[0]


def sent_traceparents(fake_upstream: FakeUpstream, before: int) -> dict[str, str | None]:
    """Model → the traceparent its upstream request carried, for requests since `before`."""
    return {model: headers.get("traceparent") for model, headers in sent(fake_upstream, before)}


def sent(fake_upstream: FakeUpstream, before: int) -> list[tuple[str, dict[str, str]]]:
    """(model, trace context headers) of each upstream request since `before`."""
    log = fake_upstream.log
    pairs = zip(log.requests[before:], log.trace_headers[before:], strict=True)
    return [(request["model"], headers) for request, headers in pairs]


def test_an_escalated_step_is_a_span_in_the_agents_trace_with_a_span_per_upstream_call(
    traced: Callable[..., RunningProxy], receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    proxy = traced()
    before = len(fake_upstream.log.requests)
    headers = {**HEADERS, "traceparent": traceparent(), "tracestate": "vendor=abc"}
    body = {"model": "always", "messages": user(), "temperature": 0.2, "max_tokens": 50}
    response = httpx.post(f"{proxy.url}/v1/chat/completions", headers=headers, json=body)
    assert response.status_code == 200
    spans = exported(proxy, receiver)  # after the agreement check, made once it was answered

    step = one(spans, **{"escalator.request_id": response.headers["x-request-id"]})
    assert step.name == "step always" and step.kind == SERVER
    assert (step.trace_id, step.parent_span_id) == (AGENT_TRACE, AGENT_SPAN)
    assert step.resource["service.name"] == "escalator-test"
    assert (
        step.attributes
        | {
            "escalator.api": "chat.completions",
            "escalator.route": "always",
            "escalator.tenant": "acme",
            "escalator.session": "otel-episode",
            "escalator.step": 0,
            "escalator.action": "strong",
            "escalator.decision.action": "strong",
            "escalator.decision.p_escalate": 1.0,
            "escalator.decision.reason": step.attributes["escalator.decision.reason"],
            "escalator.budget.before": 2,
            "escalator.budget.after": 1,
            "http.response.status_code": 200,
        }
        == step.attributes
    )
    assert response.headers["x-escalator-action"] == "strong"

    answer = one(spans, **{"escalator.call": "answer"})
    assert answer.name == "chat strong-model" and answer.kind == CLIENT
    assert (answer.trace_id, answer.parent_span_id) == (AGENT_TRACE, step.span_id)
    port = int(proxy.settings.upstreams["strong"].url.split(":")[-1].split("/")[0])
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "strong-model",
        "gen_ai.response.model": "strong-model",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ["stop"],
        "server.address": "127.0.0.1",
        "server.port": port,
        "escalator.upstream": "strong",
    }.items() <= answer.attributes.items()
    assert answer.status != STATUS_ERROR

    check = one(spans, **{"escalator.call": "agreement_check"})  # the base model, afterwards
    assert check.name == "chat weak-model"
    assert (check.trace_id, check.parent_span_id) == (AGENT_TRACE, step.span_id)

    # Each upstream request carried its own call's span, in the agent's trace and state.
    assert sent(fake_upstream, before) == [
        (
            "strong-model",
            {"traceparent": traceparent(span_id=answer.span_id), "tracestate": "vendor=abc"},
        ),
        (
            "weak-model",
            {"traceparent": traceparent(span_id=check.span_id), "tracestate": "vendor=abc"},
        ),
    ]


def test_a_streamed_step_ends_its_spans_when_the_stream_ends(
    traced: Callable[..., RunningProxy], receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    proxy = traced()
    before = len(fake_upstream.log.requests)
    body = {
        "model": "never",
        "messages": user("count to three"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {**HEADERS, "traceparent": traceparent()}
    with httpx.stream(
        "POST", f"{proxy.url}/v1/chat/completions", headers=headers, json=body
    ) as response:
        text = response.read().decode()
    assert "[DONE]" in text
    upstream_saw = sent_traceparents(fake_upstream, before)
    spans = exported(proxy, receiver)

    step = one(spans, **{"escalator.route": "never"})
    assert (step.trace_id, step.parent_span_id) == (AGENT_TRACE, AGENT_SPAN)
    assert step.attributes["escalator.action"] == "base"
    assert step.attributes["escalator.decision.reason"] == "never"
    answer = one(spans, **{"escalator.call": "answer"})
    assert answer.parent_span_id == step.span_id
    assert answer.attributes["gen_ai.response.model"] == "weak-model"
    assert answer.attributes["gen_ai.usage.output_tokens"] > 0
    assert answer.attributes["escalator.upstream.ttft_ms"] >= 0
    assert upstream_saw == {"weak-model": traceparent(span_id=answer.span_id)}


def test_a_responses_step_without_a_trace_starts_one_and_passes_it_on(
    traced: Callable[..., RunningProxy], receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    proxy = traced()
    before = len(fake_upstream.log.requests)
    body = {"model": "never", "input": "hello", "store": False}
    response = httpx.post(f"{proxy.url}/v1/responses", headers=HEADERS, json=body)
    assert response.status_code == 200
    upstream_saw = sent_traceparents(fake_upstream, before)
    spans = exported(proxy, receiver)

    step = one(spans, **{"escalator.api": "responses"})
    assert step.parent_span_id == "" and step.name == "step never"
    answer = one(spans, **{"escalator.call": "answer"})
    assert (answer.trace_id, answer.parent_span_id) == (step.trace_id, step.span_id)
    # A new trace: sampled (bit 0), its trace id random (bit 1, W3C Trace Context level 2).
    header = upstream_saw["weak-model"]
    assert header is not None and header.startswith(f"00-{step.trace_id}-{answer.span_id}-")
    assert int(header[-2:], 16) & 1


def test_a_failed_intervention_is_an_error_span_beside_the_base_models_answer(
    traced: Callable[..., RunningProxy], receiver: OtlpReceiver
) -> None:
    proxy = traced()
    body = {"model": "fragile", "messages": user()}
    response = httpx.post(f"{proxy.url}/v1/chat/completions", headers=HEADERS, json=body)
    assert response.status_code == 200 and response.headers["x-escalator-action"] == "base"
    spans = exported(proxy, receiver)

    step = one(spans, **{"escalator.route": "fragile"})
    assert step.attributes["escalator.action"] == "base"
    assert step.attributes["escalator.budget.after"] == step.attributes["escalator.budget.before"]
    failed = one(spans, **{"gen_ai.request.model": "error-500-strong"})
    assert failed.status == STATUS_ERROR
    assert failed.attributes["error.type"] == "status_5xx"
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    base = one(spans, **{"gen_ai.request.model": "weak-model"})
    assert base.status != STATUS_ERROR and base.parent_span_id == step.span_id


def test_a_served_draft_and_a_best_of_n_intervention_are_call_spans_of_their_steps(
    traced: Callable[..., RunningProxy], receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    weak = {"upstream": "weak", "model": "weak-model"}
    samples = {"kind": "best_of_n", "upstream": "strong", "model": "vote", "n": 3}
    proxy = traced(
        routes={
            "cascade": {"base": weak, "policy": {"kind": "never"}, "decide": "after_draft"},
            "voted": {
                "base": weak,
                "policy": {"kind": "always"},
                "interventions": [{**samples, "sampling": "parallel"}],
                "agreement_checks": False,
            },
        }
    )
    before = len(fake_upstream.log.requests)
    headers = {**HEADERS, "traceparent": traceparent()}
    for model in ("cascade", "voted"):
        body = {"model": model, "messages": user()}
        assert httpx.post(f"{proxy.url}/v1/chat/completions", headers=headers, json=body)
    upstream_saw = sent(fake_upstream, before)
    spans = exported(proxy, receiver)

    cascade = one(spans, **{"escalator.route": "cascade"})
    assert cascade.attributes["escalator.draft_served"] is True
    draft = one(spans, **{"escalator.call": "draft"})
    assert draft.parent_span_id == cascade.span_id
    assert draft.attributes["gen_ai.usage.output_tokens"] == 7

    voted = one(spans, **{"escalator.route": "voted"})
    assert voted.attributes["escalator.action"] == "best_of_n"
    samples_span = one(spans, **{"escalator.call": "best_of_n"})
    assert samples_span.parent_span_id == voted.span_id
    assert samples_span.attributes["gen_ai.request.choice.count"] == 3
    assert samples_span.attributes["gen_ai.usage.output_tokens"] == 3 * 7  # summed
    # The draft's request, then the three samples, each under its call's span.
    assert [(model, h["traceparent"]) for model, h in upstream_saw] == [
        ("weak-model", traceparent(span_id=draft.span_id)),
        *[("vote", traceparent(span_id=samples_span.span_id))] * 3,
    ]


def test_an_unsampled_agent_trace_records_nothing_and_still_reaches_the_upstream(
    traced: Callable[..., RunningProxy], receiver: OtlpReceiver, fake_upstream: FakeUpstream
) -> None:
    proxy = traced()
    before = len(fake_upstream.log.requests)
    headers = {**HEADERS, "traceparent": traceparent(flags="00")}
    body = {"model": "never", "messages": user()}
    assert httpx.post(f"{proxy.url}/v1/chat/completions", headers=headers, json=body).is_success
    header = sent_traceparents(fake_upstream, before)["weak-model"]
    assert exported(proxy, receiver) == []
    assert header is not None
    assert header.startswith(f"00-{AGENT_TRACE}-") and header.endswith("-00")


def test_telemetry_without_the_otel_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A module set to None in sys.modules cannot be imported: as if the extra were missing.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigError) as caught:
        validate_settings({"telemetry": {"otlp_endpoint": "http://127.0.0.1:4318"}})
    assert "pip install 'escalator[otel]'" in str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("127.0.0.1:4318", "must start with http:// or https://"),
        ("http://collector:4318", None),
    ],
)
def test_the_otlp_endpoint_is_checked_and_given_its_traces_path(
    endpoint: str, problem: str | None
) -> None:
    if problem is not None:
        with pytest.raises(ConfigError, match=problem):
            validate_settings({"telemetry": {"otlp_endpoint": endpoint}})
        return
    settings = validate_settings({"telemetry": {"otlp_endpoint": endpoint}})
    assert settings.telemetry is not None
    assert settings.telemetry.otlp_endpoint == "http://collector:4318/v1/traces"
