"""The local models, direct and through the proxy: decode speed, time to first token, and
what the proxy adds (needs the `local` extra: bash deploy/local.sh once, then
.venv/bin/python bench/local_models.py).

Both llama.cpp servers are started here on loopback, and a proxy in front of them
(`escalator serve`, SQLite budgets, step log on), so the same prompt is timed directly and
through the proxy in one script, alternating, and the ratio is reported. Streaming requests,
greedy decoding, a fixed number of new tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Write a Python function that checks whether a string is a palindrome."


def timed_stream(base_url: str, model: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to first token, seconds in all, chunks) of one streamed completion."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=600)
    start = time.perf_counter()
    first = None
    chunks = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            chunks += 1
    end = time.perf_counter()
    return (first or end) - start, end - start, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from demo.proxy import ProxyProcess
    from server.local.llama import LlamaServer
    from server.local.models import STRONG, WEAK, assemble
    from server.local.process import free_port

    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            role: LlamaServer(assemble(model), model.name, Path(tmp) / f"{role}.log").start()
            for role, model in (("weak", WEAK), ("strong", STRONG))
        }
        for server in servers.values():
            server.wait_ready()
        config = {
            "server": {"port": free_port(), "anonymous_tenant": "bench"},
            "storage": {"dir": str(Path(tmp) / "data")},
            "upstreams": {
                role: {"base_url": s.base_url, "models": [s.alias]} for role, s in servers.items()
            },
            "routes": {
                "agent": {
                    "base": {"upstream": "weak", "model": WEAK.name},
                    "policy": {"kind": "threshold", "threshold": 0.5},
                    "interventions": [
                        {"kind": "strong", "upstream": "strong", "model": STRONG.name}
                    ],
                }
            },
            "tenants": {"bench": {}},
        }
        proxy = ProxyProcess(config, Path(tmp) / "proxy").start()
        try:
            print("| model | path | TTFT p50 s | decode tok/s p50 | proxy/direct wall |")
            print("|---|---|---:|---:|---:|")
            for role, server in servers.items():
                timed_stream(server.base_url, server.alias, 8)  # warm the prompt cache
                runs: dict[str, list[tuple[float, float, int]]] = {"direct": [], "proxy": []}
                for _ in range(args.repeats):
                    runs["direct"].append(timed_stream(server.base_url, server.alias, args.tokens))
                    runs["proxy"].append(timed_stream(f"{proxy.url}/v1", server.alias, args.tokens))
                walls = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
                for path, samples in runs.items():
                    ttft = statistics.median(s[0] for s in samples)
                    rate = statistics.median(s[2] / max(s[1] - s[0], 1e-9) for s in samples)
                    ratio = f"{walls['proxy'] / walls['direct']:.3f}" if path == "proxy" else ""
                    print(f"| {role} | {path} | {ttft:.3f} | {rate:.1f} | {ratio} |")
        finally:
            proxy.stop()
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
