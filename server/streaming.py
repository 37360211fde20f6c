"""Server-sent events: relay an upstream stream chunk by chunk, reading it on the way.

Bytes reach the client exactly as the upstream sent them, as they arrive. On the side, a
`StreamTranscript` parses the events to learn what the step record needs: the text, the
tool calls, token usage, the time to the first token, and whether `[DONE]` arrived; and
what the budget needs: whether any of the answer reached the client. A complete answer (a
best-of-N choice, a served draft) goes out the same way, as a `CompletionStream`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson

from router.openai_shapes import (
    Json,
    call_function,
    choice_delta,
    choice_message,
    delta_text,
    finish_reason,
    first_choice,
    tool_calls,
    usage_of,
)
from server.errors import EscalatorError, UpstreamError
from server.upstreams import Upstream


class ChunkSource(Protocol):
    """Where a streamed body comes from: an upstream's open stream, or a complete answer
    (`CompletionStream`)."""

    upstream: Upstream
    started: float

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class CompletionStream:
    """A complete chat completion sent as SSE events, shaped like an upstream stream
    (OpenAI's chunk format): a best-of-N answer, or a served draft, for a client that asked
    to stream."""

    def __init__(self, upstream: Upstream, completion: dict[str, Any], request: dict[str, Any]):
        """`request` is the client's body: a usage event is sent if it asked for one."""
        self.upstream = upstream
        self.started = time.perf_counter()
        self._completion = completion
        self._include_usage = bool((request.get("stream_options") or {}).get("include_usage"))

    async def chunks(self) -> AsyncIterator[bytes]:
        for event in self._events():
            yield b"data: " + orjson.dumps(event) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def _events(self) -> list[dict[str, Any]]:
        c = self._completion
        head = {
            "id": c.get("id", "chatcmpl-escalator"),
            "object": "chat.completion.chunk",
            "created": c.get("created", int(time.time())),
            "model": c.get("model", ""),
        }
        choice = first_choice(c)
        message = choice_message(choice)
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if calls := tool_calls(message):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        events = [
            {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {
                **head,
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": finish_reason(choice) or "stop"}
                ],
            },
        ]
        if self._include_usage:
            events.append({**head, "choices": [], "usage": c.get("usage")})
        return events

    def close(self) -> None:
        """Nothing to release: the answer is already in memory."""


class StreamTranscript:
    def __init__(self, started: float) -> None:
        self.started = started
        self.first_token_ms: float | None = None
        self.finished_ms: float | None = None
        self.done = False
        # Part of the answer (text, a tool call, a finish reason, `[DONE]`) was read, and
        # was sent on to the client: an intervention is charged for what was delivered.
        self.answered = False
        self.delivered = False
        self.error: EscalatorError | None = None
        self.usage: Json | None = None
        self.model: str | None = None  # the model the upstream says answered
        self._buffer = b""
        self._content: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: bytes) -> None:
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0  # events are read in place; only an unfinished one is kept
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                if buffer.find(b"\r\n\r\n", start) < 0:
                    break
                buffer, start = buffer[start:].replace(b"\r\n", b"\n"), 0
                continue
            for line in buffer[start:end].split(b"\n"):
                if line.startswith(b"data:"):
                    self._on_data(line[5:].strip())
            start = end + 2
        self._buffer = buffer[start:]

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
        if (usage := usage_of(data)) is not None:
            self.usage = usage
        if self.model is None and isinstance(data.get("model"), str):
            self.model = data["model"]
        choice = first_choice(data)
        delta = choice_delta(choice)
        text = delta_text(delta)
        calls = tool_calls(delta)
        tokens = bool(text or calls or delta_text(delta, "reasoning_content"))
        if tokens and self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.started) * 1000
        if tokens or finish_reason(choice):
            self.answered = True
        if text:
            self._content.append(text)
        for call in calls:
            slot = self._tool_calls.setdefault(
                call.get("index", 0), {"id": None, "type": "function", "function": {}}
            )
            slot["id"] = call.get("id") or slot["id"]
            fn = call_function(call)
            if fn.get("name"):
                slot["function"]["name"] = fn["name"]
            if fn.get("arguments"):
                slot["function"]["arguments"] = (
                    slot["function"].get("arguments", "") + fn["arguments"]
                )

    def response(self) -> dict[str, Any]:
        """The first choice's message, as the step record's `response` holds it."""
        calls = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        return {"content": "".join(self._content) or None, "tool_calls": calls or None}


def error_event(error: EscalatorError) -> bytes:
    """An SSE event carrying OpenAI's error envelope: clients raise it, never a silent end."""
    return b"data: " + error.body() + b"\n\n"


class SseRelay:
    """The body of a streamed step: the upstream's bytes unchanged, ending with an error
    event if the upstream breaks off.

    `on_finish` runs exactly once however the stream ends: completed, broken, abandoned by a
    client that disconnected, or never iterated at all (the HTTP layer calls `finish`).
    """

    def __init__(
        self,
        stream: ChunkSource,
        transcript: StreamTranscript,
        on_finish: Callable[[StreamTranscript], None],
    ) -> None:
        self._stream = stream
        self.transcript = transcript
        self._on_finish = on_finish
        self._finished = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        transcript = self.transcript
        try:
            async for chunk in self._stream.chunks():
                transcript.feed(chunk)
                yield chunk
                # Asked for the next chunk: this one was handed to the client's connection.
                transcript.delivered = transcript.answered
            if not transcript.done:
                raise UpstreamError(
                    f"upstream {self._stream.upstream.name!r} closed the stream before [DONE]",
                    code="upstream_stream_incomplete",
                )
        except EscalatorError as exc:
            transcript.error = exc
            yield error_event(exc)
        finally:
            self.finish()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.transcript.finished_ms = (time.perf_counter() - self.transcript.started) * 1000
        self._stream.close()
        self._on_finish(self.transcript)
