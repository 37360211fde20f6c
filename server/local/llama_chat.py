"""A local model server: llama-cpp-python's own, answering with OpenAI tool calls.

Run in the child process as `python -m server.local.llama_chat <llama_cpp.server options>
--chat_format escalator-tools`: it registers that chat format (the GGUF's own chat template,
its answers read for tool calls by server/local/tool_calls.py) and runs llama_cpp.server's
command line. Only the child imports llama.cpp; the proxy talks to it over HTTP.
"""

from __future__ import annotations

import json
import runpy
from typing import Any

from llama_cpp import Llama, llama_chat_format, llama_grammar

from server.local.llama import CHAT_FORMAT
from server.local.tool_calls import with_tool_calls


def _grammar_for(schema: dict[str, Any]) -> llama_grammar.LlamaGrammar:
    """A grammar for a forced call. Arguments schemas the converter cannot express are
    loosened to any JSON object rather than failing the request."""
    try:
        return llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
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
        return llama_grammar.LlamaGrammar.from_json_schema(json.dumps(loose), verbose=False)


def chat_with_tool_calls(*, llama: Llama, **kwargs: Any) -> Any:
    # The GGUF's chat template (Qwen2.5's lists the tools and asks for <tool_call> tags), as
    # llama-cpp-python builds it from the model's metadata; ChatML where a model has none.
    template = llama._chat_handlers.get(
        "chat_template.default"
    ) or llama_chat_format.get_chat_completion_handler("chatml")
    return with_tool_calls(template, _grammar_for)(llama=llama, **kwargs)


def main() -> None:
    llama_chat_format.register_chat_completion_handler(CHAT_FORMAT)(chat_with_tool_calls)
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
