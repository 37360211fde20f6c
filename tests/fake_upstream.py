"""A fake OpenAI-compatible model server: real HTTP on 127.0.0.1, behaviour chosen by model.

Models, matched by prefix (`slow-0.2` sleeps 0.2 s; any other name behaves as echo):
  echo            answers with the last user message (tool calls when tools are offered,
                  "tool said: <content>" when the last message is a tool's result)
  slow[-S]        echo after S seconds (default 0.5)
  error-500       500 with a JSON error
  html-502        502 with an HTML page, as a load balancer sends
  429             429 with retry-after: 7
  bad-request     400 with OpenAI's error envelope
  die-mid-stream  streams two chunks, then drops the connection (non-stream: drops it at once)
  stall           streams one chunk, then says nothing (non-stream: never answers)
  vote            samples that disagree: "...42", "...41", "...42.", "7" by choice index (n > 1)
                  or, one choice per request, by how many requests this model has had
  judge-K         answers "K" (a judge model picking candidate K)
  prm-judge       answers Yes/No on whether an agent will succeed, with first-token top
                  logprobs: P(yes) = 0.1 where the transcript shows "error" or "corrupted"

`/v1/responses` answers as an upstream that serves the Responses API (tests/fake_responses.py).

Run alone for benchmarks: `python -m tests.fake_upstream --port 8001`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_responses import events_of, response_of
from tests.loopback import LoopbackServer

VOTES = ["The answer is 42", "It is 41", "I think 42.", "7"]


@dataclass
class FakeUpstreamLog:
    """What the fake saw: request bodies, and requests whose client went away."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # each request's path, in order
    # Each request's W3C trace context headers (traceparent, tracestate), in order.
    trace_headers: list[dict[str, str]] = field(default_factory=list)
    cancelled: int = 0
    keep_requests: bool = True
    votes_served: int = 0

    def models(self) -> list[str]:
        return [r.get("model", "") for r in self.requests]


def _tool_result(body: dict[str, Any]) -> str | None:
    """With tools offered, a tool's result that ends the transcript (answered in text)."""
    messages = body.get("messages") or [{}]
    last = messages[-1]
    offered = bool(body.get("tools"))
    return str(last.get("content")) if offered and last.get("role") == "tool" else None


def _answer_text(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return f"echo: {body['prompt']}"
    if _tool_result(body) is not None:
        return f"tool said: {_tool_result(body)}"
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            return f"echo: {content if isinstance(content, str) else '[parts]'}"
    return "echo"


def _tool_call(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools or body.get("tool_choice") == "none" or _tool_result(body) is not None:
        return None
    name = tools[0].get("function", {}).get("name", "tool")
    return [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps({"echo": True}).decode()},
        }
    ]


def _logprobs(text: str) -> dict[str, Any]:
    return {
        "content": [
            {"token": tok, "logprob": -0.1, "bytes": list(tok.encode()), "top_logprobs": []}
            for tok in text.split(" ")
        ],
        "refusal": None,
    }


def _prm_judgement(body: dict[str, Any]) -> str:
    transcript = str(body.get("messages", [{}])[-1].get("content", "")).lower()
    return "No" if "error" in transcript or "corrupted" in transcript else "Yes"


def _judge_logprobs(text: str) -> dict[str, Any]:
    p_yes = 0.1 if text == "No" else 0.8
    top = [
        {"token": "Yes", "logprob": math.log(p_yes), "bytes": list(b"Yes")},
        {"token": "No", "logprob": math.log(1 - p_yes), "bytes": list(b"No")},
    ]
    return {"content": [{**top[text == "No"], "top_logprobs": top}], "refusal": None}


def _completion(body: dict[str, Any], log: FakeUpstreamLog) -> dict[str, Any]:
    model = str(body.get("model", ""))
    text = _answer_text(body)
    calls = _tool_call(body)
    chat = "messages" in body
    choices = []
    for i in range(int(body.get("n") or 1)):
        if model.startswith("vote"):
            text = VOTES[(i if body.get("n") else log.votes_served) % len(VOTES)]
            calls = None
        elif model.startswith("judge-"):
            text = model.removeprefix("judge-")
        elif model == "prm-judge":
            text, calls = _prm_judgement(body), None
        if chat:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if calls else text,
                "refusal": None,
            }
            if calls:
                message["tool_calls"] = calls
            choice: dict[str, Any] = {
                "index": i,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
                "logprobs": _judge_logprobs(text)
                if model == "prm-judge" and body.get("logprobs")
                else _logprobs(text)
                if body.get("logprobs")
                else None,
            }
        else:
            choice = {"index": i, "text": text, "finish_reason": "stop", "logprobs": None}
        choices.append(choice)
    return {
        "id": "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "echo"),
        "choices": choices,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def _chunks(body: dict[str, Any]) -> list[bytes]:
    """SSE events for a streamed answer, as vLLM and OpenAI send them."""
    if "messages" not in body:
        return _completion_chunks(body)
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "echo"),
    }
    calls = _tool_call(body)
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if calls:
        deltas.append({"tool_calls": [{"index": 0, **calls[0]}]})
    else:
        deltas += [{"content": word + " "} for word in _answer_text(body).split(" ")]
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 11, "completion_tokens": len(deltas), "total_tokens": 11}
        events.append({**base, "choices": [], "usage": usage})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _completion_chunks(body: dict[str, Any]) -> list[bytes]:
    base = {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "echo"),
    }
    words = _answer_text(body).split(" ")
    events = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "text": w + " ",
                    "logprobs": None,
                    "finish_reason": "stop" if i == len(words) - 1 else None,
                }
            ],
        }
        for i, w in enumerate(words)
    ]
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def make_app(log: FakeUpstreamLog) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        if log.keep_requests:
            log.requests.append(body)
            log.paths.append(request.path)
            log.trace_headers.append(
                {k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")}
            )
        model = str(body.get("model", "echo"))
        try:
            return await _behave(request, body, model, log)
        except asyncio.CancelledError:
            if not request.get("dropped"):  # the client went away, not our own drop
                log.cancelled += 1
            raise

    async def models(request: web.Request) -> web.Response:
        names = ["echo", "slow", "error-500", "html-502", "429", "die-mid-stream", "stall"]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]
        return web.json_response({"object": "list", "data": data})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/responses", completions)
    app.router.add_get("/v1/models", models)
    return app


async def _behave(
    request: web.Request, body: dict[str, Any], model: str, log: FakeUpstreamLog
) -> web.StreamResponse:
    stream = body.get("stream") is True
    if model.startswith("slow"):
        _, _, seconds = model.partition("-")
        await asyncio.sleep(float(seconds or 0.5))
    elif model.startswith("error-500"):
        return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
    elif model.startswith("html-502"):
        return web.Response(
            text="<html><body><h1>502 Bad Gateway</h1></body></html>",
            status=502,
            content_type="text/html",
        )
    elif model.startswith("not-json-200"):
        return web.Response(text="OK", status=200, content_type="text/plain")
    elif model.startswith("429"):
        return web.json_response(
            {"error": {"message": "slow down", "type": "rate_limit_error"}},
            status=429,
            headers={"retry-after": "7"},
        )
    elif model.startswith("bad-request"):
        return web.json_response(
            {
                "error": {
                    "message": "context too long",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": None,
                }
            },
            status=400,
        )
    elif model.startswith("die-mid-stream") and not stream:
        await _drop(request)
    elif model.startswith("stall") and not stream:
        await asyncio.sleep(3600)
    if request.path.endswith("/responses"):
        return await _respond(request, body, model)

    if not stream:
        completion = _completion(body, log)
        if model.startswith("vote"):
            log.votes_served += 1
        return web.Response(body=orjson.dumps(completion), content_type="application/json")
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for i, chunk in enumerate(_chunks(body)):
        if model.startswith("die-mid-stream") and i == 2:
            await _drop(request)
            return response
        if model.startswith("stall") and i == 1:
            await asyncio.sleep(3600)
        await response.write(chunk)
    await response.write_eof()
    return response


async def _respond(request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
    """`/v1/responses`, as an upstream that serves it (see tests/fake_responses.py)."""
    if "previous_response_id" in body:
        error = {"message": "unknown previous_response_id", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=400)
    if body.get("stream") is not True:
        return web.Response(body=orjson.dumps(response_of(body)), content_type="application/json")
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for i, chunk in enumerate(events_of(body)):
        if model.startswith("die-mid-stream") and i == 2:
            await _drop(request)
            return response
        await response.write(chunk)
    await response.write_eof()
    return response


async def _drop(request: web.Request) -> None:
    """Close the connection mid-answer, after what was written has had time to arrive."""
    await asyncio.sleep(0.05)
    transport = request.transport
    assert transport is not None
    transport.close()
    request["dropped"] = True
    raise asyncio.CancelledError  # nothing more to send on a dropped connection


class FakeUpstream(LoopbackServer):
    """The fake server on its own thread and event loop, for tests."""

    def __init__(self) -> None:
        super().__init__()
        self.log = FakeUpstreamLog()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        return make_app(self.log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--quiet", action="store_true", help="keep no request log (benchmarks)")
    args = parser.parse_args()
    log = FakeUpstreamLog(keep_requests=not args.quiet)
    web.run_app(make_app(log), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
