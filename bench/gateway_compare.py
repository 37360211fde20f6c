"""Maximum throughput of the whole proxy now against an earlier commit, in one run.

The layout of bench/gateway.py (the fake upstream and wrk on core 0, the proxy on core 1,
its production shape: threshold policy, SQLite budgets, step log and metrics on). Two proxies
run side by side, the working tree's and the given commit's (exported with `git archive`),
and wrk measures them in alternation, so drift in the machine's load falls on both alike.
Prints each round and the median ratio now/before, of the maximum req/s and of the proxy
process's CPU time per request (all its threads; less moved by other jobs on the machine
than the rate is).

    python bench/gateway_compare.py --before 356acfa            # c16, 5 rounds of 10 s
    python bench/gateway_compare.py --before HEAD~3 --connections 64 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import (  # noqa: E402
    KEY,
    LOAD_CORE,
    PROXY_CORE,
    Target,
    free_port,
    open_loop,
    proxy_config,
    start,
    wait_up,
    wrk,
)


def export(commit: str, into: Path) -> Path:
    """The tree of `commit`, as files under `into`."""
    archive = subprocess.run(
        ["git", "archive", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_proxy(
    code: Path, upstream: str, work: Path, name: str
) -> tuple[Target, subprocess.Popen[bytes]]:
    """A proxy of the tree at `code` on the proxy's core. It runs in that directory, which
    `python -m escalator` puts first on its path, so it imports that tree's packages."""
    port = free_port()
    config = work / f"{name}.toml"
    config.write_bytes(tomli_w.dumps(proxy_config(upstream, work / name, port)).encode())
    process = subprocess.Popen(
        [
            *("taskset", "-c", str(PROXY_CORE)),
            *(sys.executable, "-m", "escalator", "serve", "--config", str(config)),
            *("--log-level", "warning"),
        ],
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return Target(name, url, "agent", {"authorization": f"Bearer {KEY}"}), process


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})

    work = Path(tempfile.mkdtemp(prefix="escalator-compare-"))
    before_code = export(args.before, work / "before-code")
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    fake = [sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port), "--quiet"]
    processes = [start(fake, LOAD_CORE)]
    targets: dict[str, Target] = {}
    for name, code in (("before", before_code), ("now", ROOT)):
        targets[name], process = start_proxy(code, upstream, work, name)
        processes.append(process)
    pids = {name: process.pid for name, process in zip(targets, processes[1:], strict=True)}
    try:
        await wait_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        for target in targets.values():
            await wait_up(target.url.replace("/v1/chat/completions", "/healthz"))
            await open_loop(target, 100, 1.0, stream=False)  # warm up pools and caches
        rates, cpu_us = alternate(targets, pids, args.connections, args.seconds, args.rounds)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    print_ratios(rates, cpu_us, "now", "before", args.connections)


Series = dict[str, list[float]]


def alternate(
    targets: dict[str, Target],
    pids: dict[str, int],
    connections: int,
    seconds: int,
    rounds: int,
    payloads: dict[str, bytes] | None = None,
) -> tuple[Series, Series]:
    """Each target's maximum req/s (wrk) and its proxy process's CPU time per request, round
    after round, the order reversed every other round so that drift falls on all alike."""
    rates: Series = {name: [] for name in targets}
    cpu_us: Series = {name: [] for name in targets}
    for round_ in range(rounds):
        order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
        for name in order:
            cpu_before = cpu_seconds(pids[name])
            payload = payloads[name] if payloads else None
            rates[name].append(wrk(targets[name], connections, seconds, payload))
            served = rates[name][-1] * seconds
            cpu_us[name].append((cpu_seconds(pids[name]) - cpu_before) / served * 1e6)
        print(
            f"round {round_ + 1}: "
            + ", ".join(
                f"{name} {rates[name][-1]:.0f} req/s {cpu_us[name][-1]:.0f} us/req"
                for name in targets
            ),
            flush=True,
        )
    return rates, cpu_us


def print_ratios(rates: Series, cpu_us: Series, top: str, bottom: str, connections: int) -> None:
    """The medians, and the ratio top/bottom per round and its median, of both figures."""
    for figure, values in (("max req/s", rates), ("CPU us per request", cpu_us)):
        ratios = [a / b for a, b in zip(values[top], values[bottom], strict=True)]
        print(
            f"{figure} at c{connections}: {bottom} {statistics.median(values[bottom]):.0f}, "
            f"{top} {statistics.median(values[top]):.0f}; {top}/{bottom} per round "
            f"{', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}"
        )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, all its threads and those of its
    descendants (a server may answer from a child process: granian does)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


if __name__ == "__main__":
    asyncio.run(main())
