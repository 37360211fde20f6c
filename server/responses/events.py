"""Streamed Responses: the typed `response.*` events a client reads, out of the step's relay.

From a chat-only upstream the events are made from chat completion chunks (`FromChat`):
`response.created`, `response.in_progress`, then per output item `output_item.added`, its
deltas (`output_text`, `function_call_arguments`, `reasoning_text`) and their `done`
events, `output_item.done`, and last `response.completed` (or `response.incomplete` when the
token limit cut it short). From an upstream that speaks Responses the events are its own
(`FromResponses`), with the response's id made the proxy's. Either way a broken stream ends
in `response.failed`, and the final response is stored before its event is sent, so a client
that chains on it at once finds it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import orjson

from router.openai_shapes import (
    Json,
    call_function,
    choice_delta,
    delta_text,
    finish_reason,
    first_choice,
    tool_calls,
    usage_of,
)
from server.responses.answers import (
    finish,
    function_call_item,
    message_item,
    output_logprobs,
    reasoning_item,
)
from server.streaming import SseRelay

log = logging.getLogger("escalator.responses")

Event = dict[str, Any]
FINAL = frozenset({"response.completed", "response.incomplete"})
OnFinal = Callable[[dict[str, Any]], Awaitable[None]]


def sse(event: Event) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def data_payloads(buffer: bytearray, chunk: bytes) -> list[bytes]:
    """Append `chunk` to `buffer` and take out the data of every complete SSE event."""
    buffer += chunk.replace(b"\r\n", b"\n")
    payloads = []
    while (end := buffer.find(b"\n\n")) >= 0:
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            payloads.append(b"\n".join(data))
    return payloads


class EventSource:
    """Turns the relay's data payloads into Responses events."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response  # the latest snapshot of the response
        self.sequence = 0

    def opening(self) -> list[Event]:
        return []

    def events(self, data: dict[str, Any]) -> list[Event]:
        raise NotImplementedError

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def failed(self, error: dict[str, Any]) -> Event:
        response = {
            **self.response,
            "status": "failed",
            "error": {"code": "server_error", "message": str(error.get("message", ""))},
        }
        return self.event("response.failed", response=response)


class FromChat(EventSource):
    """Chat completion chunks → Responses events."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__(response)
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item receiving deltas
        self._open_call: int | None = None  # the chat index of the open function call
        self._finish_reason: Any = None
        self._usage: Any = None

    def opening(self) -> list[Event]:
        return [
            self.event("response.created", response=self.response),
            self.event("response.in_progress", response=self.response),
        ]

    def events(self, data: dict[str, Any]) -> list[Event]:
        if usage := usage_of(data):
            self._usage = usage
        choice = first_choice(data)
        delta = choice_delta(choice)
        out: list[Event] = []
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            out += self._delta("reasoning", thought)
        if text := delta_text(delta):
            out += self._delta("message", text, output_logprobs(choice))
        for call in tool_calls(delta):
            out += self._call_delta(call)
        if reason := finish_reason(choice):
            self._finish_reason = reason
        return out

    def closing(self) -> list[Event]:
        out = self._close()
        response = {**self.response, "output": self.output}
        self.response = finish(response, self._finish_reason, self._usage)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return [*out, self.event(kind, response=self.response)]

    def failed(self, error: dict[str, Any]) -> Event:
        self.response = {**self.response, "output": [_public(i) for i in self.output]}
        return super().failed(error)

    # -- items ----------------------------------------------------------------------------

    def _delta(
        self, kind: str, text: str, logprobs: list[dict[str, Any]] | None = None
    ) -> list[Event]:
        out: list[Event] = []
        item = self._open
        if item is None or item["type"] != kind:
            out += self._close()
            item = reasoning_item("", "in_progress") if kind == "reasoning" else None
            if item is None:
                item = message_item("", status="in_progress")
            item["_text"], item["_logprobs"] = "", []
            out += self._add(item)
            if kind == "message":
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                out.append(self._at(item, "response.content_part.added", part=part))
        item["_text"] += text
        delta_kind = (
            "response.output_text.delta" if kind == "message" else ("response.reasoning_text.delta")
        )
        fields: dict[str, Any] = {"delta": text}
        if kind == "message":
            fields["logprobs"] = logprobs or []
            item["_logprobs"] += fields["logprobs"]
        out.append(self._at(item, delta_kind, **fields))
        return out

    def _call_delta(self, call: Json) -> list[Event]:
        out: list[Event] = []
        index = call.get("index", 0)
        function = call_function(call)
        if self._open is None or self._open["type"] != "function_call" or index != self._open_call:
            out += self._close()
            new = function_call_item(
                {"id": call.get("id"), "function": {"name": function.get("name")}}, "in_progress"
            )
            self._open_call = index
            out += self._add(new)
        item = self._open
        assert item is not None
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out.append(self._at(item, "response.function_call_arguments.delta", delta=arguments))
        return out

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self._open = item
        self.output.append(item)
        return [
            self.event(
                "response.output_item.added",
                output_index=len(self.output) - 1,
                item=_public(item),
            )
        ]

    def _at(self, item: dict[str, Any], kind: str, **fields: Any) -> Event:
        index = self.output.index(item)
        if kind != "response.function_call_arguments.delta":
            fields["content_index"] = 0
        return self.event(kind, item_id=item["id"], output_index=index, **fields)

    def _close(self) -> list[Event]:
        item, self._open, self._open_call = self._open, None, None
        if item is None:
            return []
        status = "incomplete" if self._finish_reason == "length" else "completed"
        out: list[Event] = []
        if item["type"] == "message":
            text, logprobs = item.pop("_text"), item.pop("_logprobs")
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}
            item["content"] = [part]
            out.append(self._at(item, "response.output_text.done", text=text, logprobs=logprobs))
            out.append(self._at(item, "response.content_part.done", part=part))
        elif item["type"] == "reasoning":
            text = item.pop("_text")
            item.pop("_logprobs", None)
            item["content"] = [{"type": "reasoning_text", "text": text}]
            out.append(self._at(item, "response.reasoning_text.done", text=text))
        else:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=self.output.index(item),
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = status
        out.append(
            self.event("response.output_item.done", output_index=self.output.index(item), item=item)
        )
        return out


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


class FromResponses(EventSource):
    """An upstream's own Responses events, with the response's id made the proxy's."""

    def events(self, data: dict[str, Any]) -> list[Event]:
        if isinstance(data.get("sequence_number"), int):
            self.sequence = data["sequence_number"] + 1
        response = data.get("response")
        if isinstance(response, dict):
            shell = self.response
            data["response"] = self.response = {
                **response,
                "id": shell["id"],
                "previous_response_id": shell["previous_response_id"],
                "store": shell["store"],
            }
        return [data]

    def closing(self) -> list[Event]:
        return []


class ResponsesRelay:
    """The body of a streamed Responses step (what `SseResponse` sends): the events made
    from the step's relay, which still settles and logs the step however the stream ends."""

    def __init__(self, relay: SseRelay, source: FromChat | FromResponses, on_final: OnFinal):
        self.relay = relay
        self.source = source
        self._on_final = on_final
        self.final: dict[str, Any] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        source = self.source
        opening = source.opening()
        if opening:
            yield b"".join(sse(e) for e in opening)
        buffer = bytearray()
        ended = False
        async with aclosing(aiter(self.relay)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                out: list[bytes] = []
                for payload in data_payloads(buffer, chunk):
                    if ended:
                        continue
                    events, ended = self._read(payload)
                    for event in events:
                        if event["type"] in FINAL:
                            await self._store(event["response"])
                        out.append(sse(event))
                if out:
                    yield b"".join(out)

    def _read(self, payload: bytes) -> tuple[list[Event], bool]:
        """The events of one payload, and whether the stream has ended."""
        if payload == b"[DONE]":
            return self.source.closing(), True
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return [], False
        if not isinstance(data, dict):
            return [], False
        if "error" in data and "type" not in data:  # the relay's error event: the upstream broke
            error = data["error"] if isinstance(data["error"], dict) else {}
            return [self.source.failed(error)], True
        events = self.source.events(data)
        ended = any(e.get("type") in (*FINAL, "response.failed") for e in events)
        return events, ended

    async def _store(self, response: dict[str, Any]) -> None:
        self.final = response
        try:
            await self._on_final(response)
        except Exception:  # the answer still reaches the client; only chaining on it fails
            log.exception("could not store response %s", response.get("id"))

    def finish(self) -> None:
        self.relay.finish()
