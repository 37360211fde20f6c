"""Upstreams that serve `/v1/responses` themselves: the step's wire to them, and a reader of
their event stream that learns what the step record and the budget need."""

from __future__ import annotations

import time
from typing import Any

import orjson

from server.responses.answers import chat_usage, record_of_output
from server.route_plans import Target
from server.settings import Settings, StrongIntervention
from server.streaming import StreamTranscript

_ANSWER_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.refusal.delta",
    }
)
_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def speaks_responses(settings: Settings, target: Target) -> bool:
    """Whether the target is sent the Responses request itself: its upstream serves it,
    and it is the same request to another model (base or `strong`); best-of-N and reasoning
    interventions work on chat completions."""
    upstream = settings.upstreams.get(target.upstream)
    plain = target.intervention is None or isinstance(target.intervention, StrongIntervention)
    return upstream is not None and upstream.responses == "native" and plain


class ResponsesWire:
    """A Responses request (its previous responses expanded into `input`) riding a step."""

    path = "responses"

    def __init__(self, settings: Settings, request: dict[str, Any]) -> None:
        self.settings = settings
        # The proxy keeps the conversation, so the upstream need not (and could not resolve
        # the proxy's ids).
        self.request = {k: v for k, v in request.items() if k != "previous_response_id"}
        self.request["store"] = False

    def speaks(self, target: Target) -> bool:
        return speaks_responses(self.settings, target)

    def payload(self, target: Target) -> bytes:
        return orjson.dumps({**self.request, "model": target.model})

    def read(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return record_of_output(data.get("output")), chat_usage(data.get("usage"))

    def transcript(self, started: float) -> StreamTranscript:
        return ResponsesTranscript(started)


class ResponsesTranscript(StreamTranscript):
    """Reads a Responses event stream as `StreamTranscript` reads a chat one: its end is
    the response's final event (there is no `[DONE]`)."""

    def __init__(self, started: float) -> None:
        super().__init__(started)
        self._final: dict[str, Any] | None = None

    def _on_data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = self.answered = True
            return
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind in _ANSWER_EVENTS:
            if self.first_token_ms is None:
                self.first_token_ms = (time.perf_counter() - self.started) * 1000
            self.answered = True
        elif kind in _END_EVENTS:
            self.done = self.answered = True
            response = data.get("response")
            if isinstance(response, dict):
                self._final = response
                self.usage = chat_usage(response.get("usage"))
                model = response.get("model")
                self.model = model if isinstance(model, str) else None

    def response(self) -> dict[str, Any]:
        if self._final is None:
            return {"content": None, "tool_calls": None}
        return record_of_output(self._final.get("output"))
