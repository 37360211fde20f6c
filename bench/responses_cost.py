"""The Responses API's cost on the hot path: one agent step sent as a chat completion and as
a response (`/v1/responses`), to the same proxy and route, in alternation.

The layout of bench/gateway.py (the fake upstream and wrk on core 0, the proxy on core 1, its
production shape: threshold policy, SQLite budgets, step log and metrics on). The upstream
speaks chat completions only, so the response is translated both ways and stored (SQLite)
for `previous_response_id`: the whole of what a Responses client costs beyond a chat one.
Prints each round and the median ratio responses/chat of the maximum req/s and of the proxy
process's CPU time per request.

    python bench/responses_cost.py                  # c16, 5 rounds of 10 s
    python bench/responses_cost.py --connections 64 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import (  # noqa: E402
    KEY,
    LOAD_CORE,
    PROXY_CORE,
    Target,
    agent_body,
    free_port,
    open_loop,
    proxy_config,
    start,
    wait_up,
)
from bench.gateway_compare import alternate, print_ratios  # noqa: E402


def response_body(model: str, turn: int) -> dict[str, Any]:
    """`agent_body`'s step as a Responses request: the system message as `instructions`,
    tool calls and their results as `function_call` and `function_call_output` items."""
    chat = agent_body(model, turn)
    system, *rest = chat["messages"]
    items: list[dict[str, Any]] = []
    for message in rest:
        if message["role"] == "user":
            items.append({"role": "user", "content": message["content"]})
        elif message["role"] == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message["tool_call_id"],
                    "output": message["content"],
                }
            )
        else:
            items += [
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                }
                for call in message["tool_calls"]
            ]
    return {"model": model, "instructions": system["content"], "input": items, "temperature": 0.0}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})

    work = Path(tempfile.mkdtemp(prefix="escalator-responses-"))
    upstream_port, port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    config = work / "escalator.toml"
    config.write_bytes(tomli_w.dumps(proxy_config(upstream, work / "data", port)).encode())
    fake = [sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port), "--quiet"]
    serve = [sys.executable, "-m", "escalator", "serve", "--config", str(config)]
    processes = [start(fake, LOAD_CORE), start([*serve, "--log-level", "warning"], PROXY_CORE)]
    headers = {"authorization": f"Bearer {KEY}"}
    base = f"http://127.0.0.1:{port}/v1"
    targets = {
        "chat": Target("chat", f"{base}/chat/completions", "agent", headers),
        "responses": Target("responses", f"{base}/responses", "agent", headers),
    }
    payloads = {
        "chat": orjson.dumps(agent_body("agent", 1)),
        "responses": orjson.dumps(response_body("agent", 1)),
    }
    pid = processes[1].pid
    try:
        await wait_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_up(f"http://127.0.0.1:{port}/healthz")
        await open_loop(targets["chat"], 100, 1.0, stream=False)  # warm up pools and caches
        pids = {name: pid for name in targets}
        rates, cpu_us = alternate(
            targets, pids, args.connections, args.seconds, args.rounds, payloads
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    print_ratios(rates, cpu_us, "responses", "chat", args.connections)


if __name__ == "__main__":
    asyncio.run(main())
