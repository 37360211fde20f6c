"""A local model server: llama-cpp-python's own, speaking OpenAI's tool-call shapes both ways.

Run in the child process as `python -m server.local.llama_chat <llama_cpp.server options>
--chat_format escalator-tools`. It registers that chat format (the GGUF's own chat template,
its answers read for tool calls by server/local/tool_calls.py) and serves llama-cpp-python's
app behind one fix to what it accepts: its request model refuses an assistant message whose
`content` is null (with a 500), which is exactly how OpenAI clients send back a turn that
called tools, and takes only strings where OpenAI also allows text parts. Only the child
imports llama.cpp; the proxy talks to it over HTTP.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server.local.llama import CHAT_FORMAT
from server.local.tool_calls import with_tool_calls

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

_CHAT_PATH = "/v1/chat/completions"


def accepted_request(body: bytes) -> bytes:
    """A chat request as llama-cpp-python's server accepts it: null content of an assistant
    turn as "", text parts of assistant, system and tool messages as one string. Anything
    else (and a body that is not JSON) is left for the server to judge."""
    try:
        request = json.loads(body)
    except ValueError:
        return body
    messages = request.get("messages") if isinstance(request, dict) else None
    if not isinstance(messages, list):
        return body
    changed = False
    for message in messages:
        if not isinstance(message, dict) or message.get("role") == "user":
            continue
        content = message.get("content")
        if content is None and message.get("role") == "assistant":
            message["content"], changed = "", True
        elif isinstance(content, list) and all(
            isinstance(part, dict) and isinstance(part.get("text"), str) for part in content
        ):
            message["content"], changed = "".join(part["text"] for part in content), True
    return json.dumps(request).encode() if changed else body


class AcceptedRequests:
    """ASGI middleware: chat requests pass through `accepted_request` on their way in."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != _CHAT_PATH:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = accepted_request(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


def _grammar_for(schema: dict[str, Any]) -> Any:
    """A grammar for a forced call. Arguments schemas the converter cannot express are
    loosened to any JSON object rather than failing the request."""
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception:  # the converter raises plain Exceptions on what it cannot express
        options = schema.get("anyOf", [schema])
        loose = {
            "type": "object",
            "properties": {
                "name": {"enum": [o["properties"]["name"]["const"] for o in options]},
                "arguments": {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        return LlamaGrammar.from_json_schema(json.dumps(loose), verbose=False)


def chat_with_tool_calls(*, llama: Any, **kwargs: Any) -> Any:
    """The `escalator-tools` chat format: the GGUF's chat template (Qwen2.5's lists the tools
    and asks for <tool_call> tags), as llama-cpp-python builds it from the model's metadata
    (ChatML where a model has none), answering with OpenAI tool calls."""
    from llama_cpp import llama_chat_format

    template = llama._chat_handlers.get(
        "chat_template.default"
    ) or llama_chat_format.get_chat_completion_handler("chatml")
    return with_tool_calls(template, _grammar_for)(llama=llama, **kwargs)


def main() -> None:
    """llama-cpp-python's `python -m llama_cpp.server`, with the chat format registered and
    its app behind `AcceptedRequests` (its options; no --config_file)."""
    import uvicorn
    from llama_cpp import llama_chat_format
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    llama_chat_format.register_chat_completion_handler(CHAT_FORMAT)(chat_with_tool_calls)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_args_from_model(parser, Settings)
    args = parser.parse_args()
    parse: Any = parse_model_from_args  # typed as returning the class it is given
    server = parse(ServerSettings, args)
    app = create_app(server_settings=server, model_settings=[parse(ModelSettings, args)])
    uvicorn.run(AcceptedRequests(app), host=server.host, port=server.port)


if __name__ == "__main__":
    main()
