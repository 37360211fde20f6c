"""The HTTP server under the proxy: uvicorn (what `escalator serve` runs) against granian.

The layout of bench/gateway.py (the fake upstream and wrk on core 0, the server on core 1).
Four servers take turns on the proxy's core, one at a time, over several rounds: the bare
pass-through (bench/baseline_proxy.py) and the whole proxy (its production shape), each
under uvicorn and under granian (Rust, ASGI, one worker on uvloop). Prints the median
maximum req/s of each and its CPU time per request, and the ratios that decide whether
granian would be worth adopting.

    pip install 'granian[uvloop]'     # not a dependency of the project
    python bench/servers.py           # 3 rounds of 8 s at 16 connections
    python bench/servers.py --connections 64 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import (  # noqa: E402
    KEY,
    LOAD_CORE,
    PROXY_CORE,
    Target,
    free_port,
    proxy_config,
    start,
    wait_up,
    wrk,
)
from bench.gateway_compare import cpu_seconds  # noqa: E402

SERVERS = ("bare/uvicorn", "bare/granian", "proxy/uvicorn", "proxy/granian")


def proxy_app() -> Any:
    """The proxy's ASGI app as `escalator serve` builds it, for granian's `--factory`
    (configuration from $ESCALATOR_BENCH_CONFIG)."""
    from server.app import create_app
    from server.cli import _configuration

    settings, plans = _configuration(os.environ["ESCALATOR_BENCH_CONFIG"], None, None)
    return create_app(settings, plans)


def bare_app() -> Any:
    """bench/baseline_proxy.py's app, in front of $ESCALATOR_BENCH_UPSTREAM."""
    sys.argv = ["baseline_proxy", os.environ["ESCALATOR_BENCH_UPSTREAM"], "0"]
    sys.path.insert(0, str(ROOT / "bench"))
    from baseline_proxy import app

    return app


def command(server: str, port: int, config: Path, upstream: str) -> list[str]:
    app, runner = server.split("/")
    if runner == "uvicorn" and app == "proxy":
        return [sys.executable, "-m", "escalator", "serve", "--config", str(config)]
    if runner == "uvicorn":
        return [sys.executable, str(ROOT / "bench" / "baseline_proxy.py"), upstream, str(port)]
    granian = shutil.which("granian", path=str(Path(sys.executable).parent))
    if granian is None:
        raise SystemExit("granian is not installed: pip install 'granian[uvloop]'")
    return [
        *(granian, "--interface", "asgi", "--loop", "uvloop", "--no-ws", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        f"bench.servers:{app}_app",
    ]


def measure(
    server: str, upstream: str, work: Path, connections: int, seconds: int
) -> tuple[float, float]:
    """Maximum req/s of `server`, and its CPU microseconds per request."""
    port = free_port()
    config = work / f"{server.replace('/', '-')}.toml"
    config.write_bytes(tomli_w.dumps(proxy_config(upstream, work / "data", port)).encode())
    env = {
        "ESCALATOR_BENCH_CONFIG": str(config),
        "ESCALATOR_BENCH_UPSTREAM": upstream,
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        ["taskset", "-c", str(PROXY_CORE), *command(server, port, config, upstream)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    proxy = server.startswith("proxy")
    target = Target(
        server,
        url,
        "agent" if proxy else "weak-model",
        {"authorization": f"Bearer {KEY}"} if proxy else {},
    )
    try:
        asyncio.run(wait_up(f"http://127.0.0.1:{port}/healthz"))
        wrk(target, connections, 2)  # warm up
        before = cpu_seconds(process.pid)
        rate = wrk(target, connections, seconds)
        cpu = cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait()
    return rate, 1e6 * cpu / (rate * seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="escalator-servers-"))
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    fake = [sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port), "--quiet"]
    upstream_process = start(fake, LOAD_CORE)
    rates: dict[str, list[float]] = {s: [] for s in SERVERS}
    costs: dict[str, list[float]] = {s: [] for s in SERVERS}
    try:
        for round_ in range(args.rounds):
            for server in SERVERS:
                achieved, spent = measure(server, upstream, work, args.connections, args.seconds)
                rates[server].append(achieved)
                costs[server].append(spent)
                print(
                    f"round {round_ + 1} {server:14} {achieved:7.0f} req/s {spent:6.0f} µs/request"
                )
    finally:
        upstream_process.terminate()
    rate = {s: statistics.median(v) for s, v in rates.items()}
    cost = {s: statistics.median(v) for s, v in costs.items()}
    print(f"\nmedians of {args.rounds} rounds at {args.connections} connections:")
    for server in SERVERS:
        print(f"  {server:14} {rate[server]:7.0f} req/s {cost[server]:6.0f} µs/request")
    print(
        f"granian/uvicorn max req/s: bare {rate['bare/granian'] / rate['bare/uvicorn']:.2f}, "
        f"proxy {rate['proxy/granian'] / rate['proxy/uvicorn']:.2f}; proxy on granian / bare "
        f"on uvicorn {rate['proxy/granian'] / rate['bare/uvicorn']:.2f} (on uvicorn "
        f"{rate['proxy/uvicorn'] / rate['bare/uvicorn']:.2f})"
    )


if __name__ == "__main__":
    main()
