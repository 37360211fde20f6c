"""A fake local model server: the embedded default's chat handler (server/local/tool_calls.py)
over a scripted model, on real HTTP at 127.0.0.1, shaped as llama-cpp-python's server answers.

What the scripted model writes is chosen by model name, as the real small Qwen models write it
when the chat template has shown them the request's tools:
  qwen-tagged     <tool_call>{"name": <first tool>, "arguments": {"city": "Paris"}}</tool_call>
  qwen-bare       the same JSON object without the tags (what issue 14 saw from the 0.5B model)
  qwen-prose      a sentence, then a tagged call
  qwen-broken     a tagged call cut off in its arguments
  qwen-stranger   a tagged call to `launch_rockets`, which no request declares
  anything else   "Paris is the capital of France."
Under a grammar (a forced call) it writes the one call the grammar's schema allows.

A request passes the child's fix (`accepted_request`), then llama-cpp-python's own checks (a
500 for a null or non-string `content` on an assistant turn). The handler's input (messages,
tools, grammar) is kept in `FakeLlama.seen`; the model's text comes back as
llama-cpp-python's GGUF-template handler returns it (streamed in pieces of a few characters,
then an empty delta with the finish reason), read for tool calls by the same
`with_tool_calls` the real child process runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from server.local.llama_chat import accepted_request
from server.local.tool_calls import with_tool_calls
from tests.loopback import LoopbackServer

ARGUMENTS = {"city": "Paris"}
PROSE = "Paris is the capital of France."


def _call_text(name: str) -> str:
    return orjson.dumps({"name": name, "arguments": ARGUMENTS}).decode()


def model_text(model: str, tools: Any, grammar: Any) -> str:
    if grammar is not None:
        return _call_text(grammar.get("anyOf", [grammar])[0]["properties"]["name"]["const"])
    first = tools[0]["function"]["name"] if tools else "get_weather"
    tagged = f"<tool_call>\n{_call_text(first)}\n</tool_call>"
    return {
        "qwen-tagged": tagged,
        "qwen-bare": _call_text(first),
        "qwen-prose": f"Let me look that up.\n{tagged}",
        "qwen-broken": tagged[:40],
        "qwen-stranger": f"<tool_call>\n{_call_text('launch_rockets')}\n</tool_call>",
    }.get(model, PROSE)


class FakeLlama(LoopbackServer):
    """The fake server on its own thread and event loop."""

    cancel_handlers = False

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []
        self.chat = with_tool_calls(self._template, grammar_for=lambda schema: schema)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _template(
        self,
        *,
        messages: list[Any],
        model: str,
        stream: bool = False,
        tools: Any = None,
        grammar: Any = None,
        **_: Any,
    ) -> Any:
        """llama-cpp-python's chat-template handler, the model's text scripted."""
        self.seen.append({"messages": messages, "tools": tools, "grammar": grammar})
        text = model_text(model, tools, grammar)
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if stream:
            return _chunks(base, text)
        message = {"role": "assistant", "content": text}
        return {
            **base,
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
        }

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(accepted_request(await request.read()))
        refused = _refused(body["messages"])
        if refused:  # llama-cpp-python's request model, and its answer to a refusal
            error = {"message": refused, "type": "internal_server_error"}
            return web.json_response({"error": error}, status=500)
        answer = self.chat(**body)
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for chunk in answer:
            await response.write(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
        await response.write(b"data: [DONE]\r\n\r\n")
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "qwen", "object": "model"}]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        return app


def _refused(messages: list[dict[str, Any]]) -> str | None:
    """What llama-cpp-python's server refuses: content other than a string (or, except on
    an assistant turn, null) where the role is not `user`."""
    for i, message in enumerate(messages):
        content, role = message.get("content"), message.get("role")
        if role != "user" and not (
            isinstance(content, str) or (content is None and role != "assistant")
        ):
            return f"messages.{i}.content: Input should be a valid string"
    return None


def _chunks(base: dict[str, Any], text: str) -> Iterator[dict[str, Any]]:
    base = {**base, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    yield chunk({"role": "assistant"})
    for at in range(0, len(text), 4):
        yield chunk({"content": text[at : at + 4]})
    yield chunk({}, "stop")
