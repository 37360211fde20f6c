"""A real agent workload: reasoning-gym tasks solved by a small tool-using agent.

Tasks come from reasoning-gym's generators (each with its own answer checker): arithmetic
word problems (`gsm_symbolic`), chains of sums (`chain_sum`) and expressions
(`basic_arithmetic`). The agent talks to the proxy with the official `openai` SDK, one
session per task, and may call two tools: `calculator` (arithmetic, evaluated safely from
the expression's syntax tree) and `submit_answer`, which the harness refuses (a tool error)
until the agent has calculated something. At most `max_steps` model calls; an agent that
answers in plain text has submitted that text. The checked outcome is reported
to `/v1/sessions/{id}/outcome`.

Small local models served by llama.cpp with their own chat template return tool calls as
text: a Qwen-style `<tool_call>{"name": ..., "arguments": ...}</tool_call>`, or the bare JSON
object. The agent reads calls from there when the response carries none in `tool_calls`,
as agent frameworks commonly do, and sends them back as proper OpenAI tool calls.
"""

from __future__ import annotations

import ast
import json
import operator
import re
import uuid
from functools import cache
from typing import Any

import httpx

from demo.episodes import EpisodeResult, escalated, had_budget, report_outcome

# A graded mix, so that the weak model solves some tasks and not others: short expressions
# with small numbers, longer chains of sums, and arithmetic word problems.
FAMILIES: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    (
        "basic_arithmetic",
        (("min_terms", 2), ("max_terms", 4), ("min_digits", 1), ("max_digits", 2)),
    ),
    ("chain_sum", (("min_terms", 3), ("max_terms", 5), ("min_digits", 2), ("max_digits", 3))),
    ("gsm_symbolic", ()),
)
SYSTEM = (
    "You solve math problems step by step. Use the calculator tool for every arithmetic "
    "operation. When you know the final answer, call submit_answer with just the number."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression, e.g. (12 + 7) * 3 / 4",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "submit_answer",
            "description": "Submit the final answer to the problem",
            "parameters": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        },
    },
]
_TOOL_CALL_TEXT = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


@cache
def _dataset(family: str, params: tuple[tuple[str, int], ...], seed: int, size: int) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(family, size=size, seed=seed, **dict(params))


def task(index: int, seed: int, size: int = 2_000) -> tuple[Any, dict[str, Any]]:
    """Task `index` of the mix seeded `seed`: (its dataset, for scoring; the entry)."""
    family, params = FAMILIES[index % len(FAMILIES)]
    dataset = _dataset(family, params, seed, size)
    return dataset, dataset[(index // len(FAMILIES)) % size]


class GymWorkload:
    name = "reasoning-gym (basic_arithmetic, chain_sum, gsm_symbolic)"

    def __init__(self, max_steps: int = 6, max_tokens: int = 160) -> None:
        self.max_steps = max_steps
        self.max_tokens = max_tokens

    def play(
        self, proxy_url: str, api_key: str, route: str, index: int, seed: int
    ) -> EpisodeResult:
        from openai import OpenAI

        dataset, entry = task(index, seed)
        session = f"gym-{seed}-{index}-{uuid.uuid4().hex[:8]}"
        client = OpenAI(
            base_url=f"{proxy_url}/v1",
            api_key=api_key,
            default_headers={"X-Session-Id": session},
            max_retries=0,
            timeout=600,
        )
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": entry["question"]},
        ]
        answer: str | None = None
        calculated = False
        used = eligible = steps = 0
        while answer is None and steps < self.max_steps:
            raw = client.chat.completions.with_raw_response.create(
                model=route,
                messages=messages,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
                max_tokens=self.max_tokens,
                temperature=0.0,
            )
            steps += 1
            headers = httpx.Response(200, headers=dict(raw.headers))
            used += escalated(headers)
            eligible += had_budget(headers)
            message = raw.parse().choices[0].message
            calls = _tool_calls(message.content or "", message.tool_calls)
            if not calls:
                answer = (message.content or "").strip()
                break
            messages.append(
                {
                    "role": "assistant",
                    "content": "",  # llama.cpp's server refuses null content here
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                        for call_id, name, args in calls
                    ],
                }
            )
            for call_id, name, args in calls:
                if name == "submit_answer" and calculated:
                    answer = str(args.get("answer", "")).strip()
                    break
                if name == "submit_answer":
                    # The harness's guardrail: an answer with no calculation behind it is sent
                    # back, as a failed tool call the next step must recover from.
                    result = "error: no calculation done yet: use the calculator tool first"
                elif name == "calculator":
                    result = calculate(str(args.get("expression", "")))
                    calculated = calculated or not result.startswith("error")
                else:
                    result = f"error: unknown tool {name!r}"
                messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        score = float(dataset.score_answer(_final(answer), entry)) if answer else 0.0
        success = score >= 1.0
        with httpx.Client(
            base_url=proxy_url,
            headers={"authorization": f"Bearer {api_key}", "x-session-id": session},
        ) as http:
            report_outcome(http, session, success, score)
        return EpisodeResult(success, steps, used, eligible)


def _tool_calls(content: str, calls: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, name, arguments) of the calls an answer makes, from the API or its text."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for call in calls or []:
        try:
            args = json.loads(call.function.arguments or "{}")
        except ValueError:
            args = {}
        found.append((call.id, call.function.name, args if isinstance(args, dict) else {}))
    if found:
        return found
    texts = [m.group(1) for m in _TOOL_CALL_TEXT.finditer(content)] or _json_objects(content)
    for i, text in enumerate(texts):
        try:
            call = json.loads(text)
        except ValueError:
            continue
        if not isinstance(call, dict) or "name" not in call:
            continue
        args = call.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {}
        found.append((f"call_{i}", str(call["name"]), args if isinstance(args, dict) else {}))
    return found


def _json_objects(text: str) -> list[str]:
    """Every JSON object in a text, fenced in ``` or bare, in order."""
    decoder = json.JSONDecoder()
    found, i = [], 0
    while (start := text.find("{", i)) != -1:
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        found.append(text[start:end])
        i = end
    return found


def _final(answer: str) -> str:
    """The answer as a checker reads it: a bare number where the text ends with one."""
    numbers: list[str] = re.findall(r"-?\d+(?:\.\d+)?", answer.replace(",", ""))
    if numbers and not re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", answer):
        return numbers[-1]
    return answer


_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> str:
    """Evaluate arithmetic from its syntax tree (numbers and + - * / // % **, parentheses)."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            result: float = _OPERATORS[type(node.op)](left, right)
            return result
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            unary: float = _OPERATORS[type(node.op)](value(node.operand))
            return unary
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")

    try:
        result = value(ast.parse(expression.replace("^", "**"), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        return f"error: {exc}"
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return str(round(result, 6) if isinstance(result, float) else result)
