"""Gateway overhead: the proxy's added latency against calling the same upstream directly.

Layout (2 cores): the fake upstream and the load generator share core 0, the proxy runs on
core 1 with its default production shape (threshold policy, SQLite budgets, step log and
metrics on). Fixed rates use an open-loop generator with evenly spaced arrivals; latency is
measured from each request's scheduled send time, so a stalled proxy cannot hide queueing.
Maximum throughput uses wrk.

    python bench/gateway.py                 # all measurements, about 3 minutes
    python bench/gateway.py --quick         # one repetition, shorter runs
    python bench/gateway.py --litellm --litellm-bin /tmp/litellm-venv/bin/litellm
                                            # also LiteLLM in front of the same upstream
    python bench/gateway.py --telemetry     # also a second proxy with [telemetry] on,
                                            # exporting to bench/otlp_sink.py (the otel extra)

Prints a table and writes bench/results/gateway-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.settings import hash_api_key  # noqa: E402

KEY = "sk-bench"
LOAD_CORE, PROXY_CORE = 0, 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_body(model: str, turn: int, stream: bool = False) -> dict[str, Any]:
    """One step of a tool-using agent: a realistic request of about 1 kB."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful agent. Use the calculator tool."},
        {
            "role": "user",
            "content": "A train leaves at 3pm at 80 km/h; when has it covered 260 km?",
        },
    ]
    for i in range(turn % 4):
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {
                            "name": "calc",
                            "arguments": json.dumps({"expr": f"260/80+{i}"}),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": f"c{i}", "content": str(3.25 + i)},
        ]
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0.0}
    if stream:
        body["stream"] = True
    return body


@dataclass
class Target:
    name: str
    url: str
    model: str
    headers: dict[str, str]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(
    target: Target, rate: float, seconds: float, stream: bool, connections: int = 0
) -> dict[str, float]:
    """Send `rate` requests per second, evenly spaced, for `seconds`, over at most
    `connections` connections (0: as many as needed); latencies in ms from the scheduled send."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            headers = {**target.headers, "x-session-id": f"bench-{i % 200}"}
            body = orjson.dumps(agent_body(target.model, i // 200, stream))
            try:
                async with session.post(target.url, data=body, headers=headers) as response:
                    if stream:
                        async for _ in response.content.iter_any():
                            latencies.append((time.perf_counter() - scheduled) * 1000)
                            break
                        await response.read()
                    else:
                        await response.read()
                        latencies.append((time.perf_counter() - scheduled) * 1000)
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(i, start + i / rate) for i in range(total)))
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "errors": errors,
        "n": len(latencies),
    }


def wrk(target: Target, connections: int, seconds: int, payload: bytes | None = None) -> float:
    """Maximum req/s of POSTs of `payload` (default: an agent step's chat request)."""
    script = Path(tempfile.mkdtemp()) / "post.lua"
    body = json.dumps((payload or orjson.dumps(agent_body(target.model, 1))).decode())
    headers = "".join(
        f'wrk.headers["{k}"] = "{v}"\n'
        for k, v in {**target.headers, "content-type": "application/json"}.items()
    )
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {body}\n{headers}'
        "request = function()\n"
        "  local headers = {}\n"
        "  for k, v in pairs(wrk.headers) do headers[k] = v end\n"
        '  headers["x-session-id"] = "wrk-" .. math.random(1, 1000)\n'
        "  return wrk.format(nil, nil, headers)\n"
        "end\n"
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(LOAD_CORE),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            target.url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} error responses against {target.name}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def start(cmd: list[str], core: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", str(core), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def proxy_config(upstream: str, data: Path, port: int, store: str = "sqlite") -> dict[str, Any]:
    strong = {"kind": "strong", "upstream": "strong", "model": "strong-model", "cost": 1}
    return {
        "server": {"port": port},
        "storage": {"dir": str(data), "budget_store": store},
        "upstreams": {"weak": {"base_url": upstream}, "strong": {"base_url": upstream}},
        "routes": {
            "agent": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "threshold", "threshold": 0.5},
                "interventions": [strong],
            }
        },
        "tenants": {"bench": {"api_keys": [hash_api_key(KEY)], "interventions_per_session": 3}},
    }


def start_litellm(
    upstream: str, work: Path, binary: str | None
) -> tuple[subprocess.Popen[bytes], Target]:
    binary = binary or shutil.which("litellm")
    if binary is None:
        raise SystemExit(
            "litellm is not installed: pip install 'litellm[proxy]' (or --litellm-bin)"
        )
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: agent\n    litellm_params:\n"
        f"      model: openai/weak-model\n      api_base: {upstream}\n      api_key: none\n"
        "general_settings:\n  master_key: sk-litellm-bench\n"
    )
    process = start(
        [binary, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        PROXY_CORE,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return process, Target("litellm", url, "agent", {"authorization": "Bearer sk-litellm-bench"})


def start_traced_proxy(
    upstream: str, work: Path, sink_port: int, port: int, store: str
) -> list[subprocess.Popen[bytes]]:
    """The same proxy with [telemetry] on, exporting every step's spans to an OTLP sink that
    only counts them (on the load core: it is not the proxy's cost)."""
    config = proxy_config(upstream, work / "data-otel", port, store)
    config["telemetry"] = {"otlp_endpoint": f"http://127.0.0.1:{sink_port}"}
    path = work / "escalator-otel.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    serve = [sys.executable, "-m", "escalator", "serve", "--config", str(path)]
    return [
        start([sys.executable, str(ROOT / "bench" / "otlp_sink.py"), str(sink_port)], LOAD_CORE),
        start([*serve, "--log-level", "warning"], PROXY_CORE),
    ]


async def sink_count(port: int) -> dict[str, int]:
    await asyncio.sleep(6)  # the batch processor exports every 5 s
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/count") as response,
    ):
        counted: dict[str, int] = await response.json()
        return counted


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy")
    parser.add_argument(
        "--litellm-bin", help="the litellm command, e.g. from a venv of its own (its pins clash)"
    )
    parser.add_argument("--budget-store", default="sqlite", choices=["memory", "sqlite"])
    parser.add_argument(
        "--telemetry", action="store_true", help="also measure a proxy exporting OTLP traces"
    )
    args = parser.parse_args()
    seconds, repeats, wrk_seconds = (5.0, 1, 5) if args.quick else (10.0, 3, 10)
    os.sched_setaffinity(0, {LOAD_CORE})

    work = Path(tempfile.mkdtemp(prefix="escalator-bench-"))
    upstream_port, proxy_port, baseline_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    config = work / "escalator.toml"
    config.write_bytes(
        tomli_w.dumps(proxy_config(upstream, work / "data", proxy_port, args.budget_store)).encode()
    )
    processes = [
        start(
            [sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port), "--quiet"],
            LOAD_CORE,
        ),
        start(
            [
                sys.executable,
                "-m",
                "escalator",
                "serve",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
            PROXY_CORE,
        ),
        start(
            [
                sys.executable,
                str(ROOT / "bench" / "baseline_proxy.py"),
                upstream,
                str(baseline_port),
            ],
            PROXY_CORE,
        ),
    ]
    targets = {
        "direct": Target("direct", f"{upstream}/chat/completions", "weak-model", {}),
        "baseline": Target(
            "baseline", f"http://127.0.0.1:{baseline_port}/v1/chat/completions", "weak-model", {}
        ),
        "escalator": Target(
            "escalator",
            f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
            "agent",
            {"authorization": f"Bearer {KEY}"},
        ),
    }
    if args.litellm:
        process, target = start_litellm(upstream, work, args.litellm_bin)
        processes.append(process)
        targets["litellm"] = target
    if args.telemetry:
        sink_port, traced_port = free_port(), free_port()
        processes += start_traced_proxy(upstream, work, sink_port, traced_port, args.budget_store)
        targets["escalator+otel"] = Target(
            "escalator+otel",
            f"http://127.0.0.1:{traced_port}/v1/chat/completions",
            "agent",
            {"authorization": f"Bearer {KEY}"},
        )
    results: dict[str, Any] = {
        "quick": args.quick,
        "cores": {"load+upstream": LOAD_CORE, "proxy": PROXY_CORE},
    }
    try:
        await wait_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_up(f"http://127.0.0.1:{proxy_port}/healthz")
        await wait_up(f"http://127.0.0.1:{baseline_port}/")
        if args.litellm:
            await wait_up(
                targets["litellm"].url.replace("/v1/chat/completions", "/health/liveliness")
            )
        if args.telemetry:
            await wait_up(targets["escalator+otel"].url.replace("/v1/chat/completions", "/healthz"))
        for target in targets.values():  # warm up pools and caches
            await open_loop(target, 100, 1.0, stream=False)

        measures = [
            ("nonstream@50", 50, False, 0),
            ("nonstream@500/c16", 500, False, 16),
            ("nonstream@500/c64", 500, False, 64),
            ("stream@100", 100, True, 0),
        ]
        for label, rate, stream, connections in measures:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for _ in range(repeats):
                for name, target in targets.items():
                    if name == "litellm" and rate > 75:
                        continue  # LiteLLM saturates near 75 req/s on one core
                    runs[name].append(await open_loop(target, rate, seconds, stream, connections))
            results[label] = {
                name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                for name, rs in runs.items()
                if rs
            }
        for connections in (16, 64):
            results[f"max_rps@c{connections}"] = {
                name: statistics.median(wrk(t, connections, wrk_seconds) for _ in range(repeats))
                for name, t in targets.items()
                if name != "litellm"
            }
        if args.telemetry:
            results["otlp_sink"] = await sink_count(sink_port)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)

    report(results)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {path.relative_to(ROOT)}")


def report(results: dict[str, Any]) -> None:
    """Added latency = the proxy's percentile minus the direct call's, same run and script."""
    print(
        f"{'measure':<19}{'target':<11}{'p50 ms':>8}{'p99 ms':>8}{'added p50':>11}{'added p99':>11}"
    )
    for label in ("nonstream@50", "nonstream@500/c16", "nonstream@500/c64", "stream@100"):
        rows = results[label]
        direct = rows["direct"]
        for name, row in rows.items():
            added = ""
            if name != "direct":
                p50, p99 = row["p50_ms"] - direct["p50_ms"], row["p99_ms"] - direct["p99_ms"]
                added = f"{p50:11.2f}{p99:11.2f}"
            errors = f"  ({row['errors']:.0f} errors)" if row.get("errors") else ""
            print(f"{label:<19}{name:<11}{row['p50_ms']:8.2f}{row['p99_ms']:8.2f}{added}{errors}")
        if "litellm" in rows:
            ours = rows["escalator"]["p50_ms"] - direct["p50_ms"]
            theirs = rows["litellm"]["p50_ms"] - direct["p50_ms"]
            print(
                f"{'':<19}LiteLLM added p50 / Escalator added p50 = {theirs / max(ours, 1e-3):.1f}x"
            )
    for c in (16, 64):
        r = results[f"max_rps@c{c}"]
        cells = "  ".join(f"{name} {value:7.0f}" for name, value in r.items())
        print(
            f"max req/s c={c:<3} {cells}   escalator/baseline {r['escalator'] / r['baseline']:.2f}"
        )
        if "escalator+otel" in r:
            print(f"{'':<16}escalator+otel/escalator {r['escalator+otel'] / r['escalator']:.3f}")
    if "otlp_sink" in results:
        print(f"OTLP sink received: {results['otlp_sink']}")


if __name__ == "__main__":
    asyncio.run(main())
