"""Soak: a fixed number of mixed requests against a real `escalator serve`, once per budget store.

For each store (memory, SQLite, Redis on a throwaway redis-server) the proxy runs as a child
process in front of the fake upstream bench/gateway.py uses, and takes two phases of
`--requests` each at a bounded concurrency:

1. the mix: streamed and non-streamed chat steps on routes that escalate (`always`, `random`,
   the threshold route `agent`) and one that does not (`never`), in many sessions (a few hot
   ones hit concurrently), a quarter without a session id, a fifth of the streams hung up after
   their first content chunk, and 2% bad inputs from issue 12 that must each get a 400 envelope;
2. the same mix without any session id: the RSS target of issue 12 (< 10 MB per 100,000).

Printed per store: the proxy's RSS and open descriptors at start, every 10% and at the end;
responses by status; every unexpected outcome (the first few in full, then counts by kind);
responses outside OpenAI's error envelope; budget overruns (per session, escalated answers the
client received, `x-escalator-action` other than `base` with content, against C; and
`GET /v1/sessions/{id}` for a sample: used <= C, received <= used); the proxy's log errors.
Exit status 1 when a target fails. Run from the repository root:

    python bench/soak.py                       # 100,000 requests per phase and store
    python bench/soak.py --quick               # 10,000
    python bench/soak.py --stores memory --requests 100000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import tomli_w
from gateway import (
    KEY,
    LOAD_CORE,
    PROXY_CORE,
    ROOT,
    agent_body,
    free_port,
    proxy_config,
    start,
    wait_up,
)

ROUTES = {"always": 0.3, "random": 0.25, "agent": 0.15, "never": 0.3}  # agent: threshold
NO_SESSION, HOT, STREAM, HANGUP, BAD = 0.25, 0.1, 0.5, 0.2, 0.02
SHOWN = 5  # unexpected outcomes printed in full
AUTH = {"authorization": f"Bearer {KEY}"}
RSS_TARGET_MB, RSS_TARGET_PER = 10.0, 100_000


@dataclass(frozen=True)
class Plan:
    route: str
    session: str | None
    stream: bool
    hangup: bool
    bad: tuple[str, dict[str, Any], int] | None = None  # name, body, the status expected


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    shown: list[str] = field(default_factory=list)
    non_envelope: Counter[str] = field(default_factory=Counter)
    received: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    announced: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def odd(self, detail: str) -> None:
        """An unexpected outcome: counted by kind (up to the first colon after the label)."""
        self.unexpected[":".join(detail.split(":")[:2])] += 1
        if len(self.shown) < SHOWN:
            self.shown.append(detail[:800])


def bad_inputs() -> list[tuple[str, dict[str, Any], int]]:
    """Issue 12's bad inputs on an escalating route: each a 400 envelope naming its
    parameter (tests/test_bad_input.py, tests/test_field_checks.py)."""
    deep: Any = "deep"
    for _ in range(300):
        deep = [deep]
    user = {"role": "user", "content": "hi"}
    bodies = {
        "text 5": ([{"role": "user", "content": [{"type": "text", "text": 5}]}], {}, 400),
        "text null": ([{"role": "user", "content": [{"type": "text", "text": None}]}], {}, 400),
        "nested 300": ([{"role": "user", "content": deep}], {}, 400),
        "n 1000": ([user], {"n": 1000, "max_tokens": -5}, 400),
        "no messages": ([], {}, 400),
        "role wizard": ([{"role": "wizard", "content": "hi"}], {}, 400),
    }
    return [
        (name, {"model": "always", "messages": m, **extra}, status)
        for name, (m, extra, status) in bodies.items()
    ]


def plans(n: int, seed: int, sessions: bool) -> list[Plan]:
    rng, pool, bad = random.Random(seed), max(n // 25, 50), bad_inputs()
    out = []
    for _ in range(n):
        session = None
        if sessions and rng.random() >= NO_SESSION:
            hot = rng.random() < HOT
            session = f"hot-{rng.randrange(16)}" if hot else f"s-{rng.randrange(pool)}"
        if sessions and rng.random() < BAD:
            out.append(Plan("always", session, False, False, rng.choice(bad)))
            continue
        route = rng.choices(list(ROUTES), weights=list(ROUTES.values()))[0]
        stream = rng.random() < STREAM
        out.append(Plan(route, session, stream, stream and rng.random() < HANGUP))
    return out


def is_envelope(raw: bytes) -> bool:
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= error.keys()


async def read_stream(response: aiohttp.ClientResponse, hangup: bool) -> tuple[bool, str | None]:
    """(some content arrived, what went wrong or "hangup" or None)."""
    content = False
    async for line in response.content:
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            return content, None
        event = orjson.loads(data)
        if "error" in event:
            return content, f"error event: {data[:400]!r}"
        content |= any((c.get("delta") or {}).get("content") for c in event.get("choices") or [])
        if hangup and content:
            response.close()  # the client goes away mid-stream
            return True, "hangup"
    return content, "stream closed before [DONE]: "


async def send(http: aiohttp.ClientSession, url: str, plan: Plan, turn: int, t: Tally) -> None:
    kind = f"{plan.route}/{'stream' if plan.stream else 'json'}"
    label, body, expect = plan.bad or (kind, agent_body(plan.route, turn, plan.stream), 200)
    headers = {**AUTH, **({"x-session-id": plan.session} if plan.session else {})}
    data = json.dumps(body).encode()  # not orjson: it refuses the 300-level nesting
    try:
        async with http.post(url, data=data, headers=headers) as response:
            action = response.headers.get("x-escalator-action", "")
            escalated = response.status == 200 and action not in ("", "base", "none")
            problem: str | None = None
            if response.status == 200 and plan.stream:
                received, problem = await read_stream(response, plan.hangup)
            else:
                raw = await response.read()
                received = response.status == 200 and b'"choices"' in raw
                if response.status != 200 and not is_envelope(raw):
                    t.non_envelope[f"{label} {response.status}"] += 1
                    problem = f"{response.status} outside the envelope: {raw[:400]!r}"
                elif response.status != expect:
                    problem = f"{response.status} ({expect} expected): {raw[:400]!r}"
                elif response.status == 200 and not received:
                    problem = f"200 without choices: {raw[:400]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        t.statuses["exception"] += 1
        t.odd(f"{label}: {type(exc).__name__}: {exc!r}")
        return
    t.statuses[f"{response.status}{' hung up' if problem == 'hangup' else ''}"] += 1
    if problem not in (None, "hangup"):
        t.odd(f"{label}: {problem}")
    if plan.session and escalated:
        t.announced[plan.session] += 1
        t.received[plan.session] += received


def show(name: str, done: int, pid: int) -> float:
    """Print the process's resident memory (VmRSS) and open file descriptors; the RSS in MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    print(f"    {name:>7} {done:>8,} requests  rss {rss:7.1f} MB  fds {fds:4d}", flush=True)
    return rss


async def phase(url: str, work: list[Plan], pid: int, concurrency: int, t: Tally) -> float:
    """Send every planned request, `concurrency` at a time; the RSS growth in MB."""
    first, done, cursor, tenth = show("start", 0, pid), 0, 0, max(len(work) // 10, 1)
    began, timeout = time.perf_counter(), aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            nonlocal done, cursor
            while cursor < len(work):
                cursor += 1
                await send(http, url, work[cursor - 1], cursor - 1, t)
                done += 1
                if done % tenth == 0 and done < len(work):
                    show(f"{done * 100 // len(work)}%", done, pid)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    await asyncio.sleep(1.0)  # refunds of hung-up streams settle, client sockets close
    last = show("end", done, pid)
    print(f"    {done:,} requests in {seconds:.1f} s ({done / seconds:.0f}/s)")
    return last - first


async def session_check(base: str, t: Tally, limit: int, seed: int) -> list[str]:
    """GET /v1/sessions/{id} for a sample: used <= C and the client received <= used."""
    names = sorted(t.received.keys() | {s for s in t.announced if s.startswith("hot-")})
    sample = random.Random(seed).sample(names, min(500, len(names)))
    problems: list[str] = []
    async with aiohttp.ClientSession(headers=AUTH) as http:
        for name in sample:
            async with http.get(f"{base}/v1/sessions/{name}") as response:
                info = await response.json(content_type=None)
            used = info.get("interventions_used") if response.status == 200 else None
            if used is None:
                problems.append(f"{name}: GET {response.status} {info}")
            elif used > limit or t.received[name] > used:
                problems.append(
                    f"{name}: interventions_used {used}, C {limit}, escalated answers received "
                    f"{t.received[name]}, escalation headers seen {t.announced[name]}"
                )
        async with http.get(f"{base}/metrics") as response:
            metrics = (await response.text()).splitlines()
    ended: Counter[str] = Counter()
    for line in metrics:  # escalator_interventions_total{...,result="refunded"} 12.0
        if line.startswith("escalator_interventions_total{"):
            ended[line.split('result="')[1].split('"')[0]] += int(float(line.split()[-1]))
    print(f"    interventions by result (/metrics, all phases so far): {dict(ended)}")
    print(f"    GET /v1/sessions/{{id}} for {len(sample)} sessions: {len(problems)} mismatches")
    for problem in problems[:SHOWN]:
        print(f"      {problem}")
    return problems


def report(t: Tally, limit: int, sessions: bool) -> int:
    print("    responses: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(t.statuses.items())))
    print(f"    unexpected outcomes: {sum(t.unexpected.values())}")
    for kind, count in t.unexpected.most_common():
        print(f"      {count:6,}  {kind}")
    print("".join(f"    - {detail}\n" for detail in t.shown), end="")
    print(f"    outside the error envelope: {sum(t.non_envelope.values())} {dict(t.non_envelope)}")
    over = {s: n for s, n in t.received.items() if n > limit}
    if sessions:
        most = max(t.received.values(), default=0)
        print(f"    sessions with escalations: {len(t.received):,}; most escalated answers")
        print(f"    received in one: {most} (C = {limit}); overruns: {len(over)} {dict(over)}")
    return len(over)


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = start([*cmd, "--appendonly", "no", "--dir", str(work)], LOAD_CORE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """The proxy as a child process, its log kept (bench/gateway.py's `start` drops it)."""
    cmd = ["taskset", "-c", str(PROXY_CORE), sys.executable, "-m", "escalator", "serve"]
    with log.open("wb") as out:
        cmd += ["--config", str(config), "--log-level", "warning"]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def log_errors(log: Path) -> int:
    text = log.read_text(errors="replace").splitlines()
    lines = [ln for ln in text if " ERROR " in ln or "Traceback" in ln]
    print(f"    proxy log: {len(lines)} ERROR/Traceback lines")
    for line in lines[:SHOWN]:
        print(f"      {line[:300]}")
    return len(lines)


async def soak(store: str, upstream: str, work: Path, args: argparse.Namespace) -> dict[str, bool]:
    print(f"\n== {store} ==", flush=True)
    extra: list[subprocess.Popen[bytes]] = []
    port = free_port()
    config = proxy_config(upstream, work / store, port, store)
    if store == "redis":
        redis = start_redis(work)
        if redis is None:
            print("    skipped: redis-server is not installed (apt-get install redis-server)")
            return {}
        extra.append(redis[0])
        config["storage"]["redis_url"] = f"redis://127.0.0.1:{redis[1]}/0"
    strong = config["routes"]["agent"]["interventions"]
    base = config["routes"]["agent"]["base"]
    for name, policy in (("always", {}), ("random", {"p": 0.3, "seed": 1}), ("never", {})):
        config["routes"][name] = {"base": base, "policy": {"kind": name, **policy}}
        config["routes"][name]["interventions"] = strong
    limit = config["tenants"]["bench"]["interventions_per_session"]
    path, log = work / f"{store}.toml", work / f"{store}.log"
    path.write_bytes(tomli_w.dumps(config).encode())
    proxy = serve(path, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_up(f"{url}/healthz")
        mixed, lonely = Tally(), Tally()
        print(f"  1. the mix: {args.requests:,} requests, {args.concurrency} at a time")
        chat, pid, n, c = f"{url}/v1/chat/completions", proxy.pid, args.requests, args.concurrency
        await phase(chat, plans(n, 1, True), pid, c, mixed)
        overruns = report(mixed, limit, True)
        problems = await session_check(url, mixed, limit, 2)
        print(f"  2. without session ids: {args.requests:,} requests")
        growth = await phase(chat, plans(n, 3, False), pid, c, lonely)
        report(lonely, limit, False)
        scaled = growth * RSS_TARGET_PER / n
        print(
            f"    rss growth {growth:+.1f} MB over {n:,}: {scaled:+.1f} MB per {RSS_TARGET_PER:,}"
        )
        errors = log_errors(log)
    finally:
        for process in (proxy, *extra):
            process.terminate()
            process.wait(30)
    unexpected = sum(mixed.unexpected.values()) + sum(lonely.unexpected.values()) + errors
    rss_target = f"rss growth < {RSS_TARGET_MB:g} MB per {RSS_TARGET_PER:,} without session ids"
    return {
        "0 budget overruns": overruns == 0 and not problems,
        "0 responses outside the envelope": not mixed.non_envelope and not lonely.non_envelope,
        rss_target: scaled < RSS_TARGET_MB,
        "0 unexpected outcomes (no 5xx, exceptions, broken streams, log errors)": unexpected == 0,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="per phase and store")
    parser.add_argument("--quick", action="store_true", help="10,000 requests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stores", default="memory,sqlite,redis")
    args = parser.parse_args()
    if args.quick:
        args.requests = 10_000
    os.chdir(ROOT)  # the fake upstream runs as `python -m tests.fake_upstream`
    os.sched_setaffinity(0, {LOAD_CORE})
    work = Path(tempfile.mkdtemp(prefix="escalator-soak-"))
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    fake = [sys.executable, "-m", "tests.fake_upstream", "--port", str(upstream_port), "--quiet"]
    fake_upstream = start(fake, LOAD_CORE)
    results: dict[str, dict[str, bool]] = {}
    try:
        await wait_up(f"{upstream}/models")
        for store in args.stores.split(","):
            results[store] = await soak(store, upstream, work, args)
    finally:
        fake_upstream.terminate()
        fake_upstream.wait(30)
    print("\n== targets ==")
    for store, targets in results.items():
        for target, passed in targets.items():
            print(f"  {store:<7} {'PASS' if passed else 'FAIL'}  {target}")
        if not targets:
            print(f"  {store:<7} SKIP  (redis-server not installed)")
    print(f"  (proxy logs and configs in {work})")
    return 0 if all(all(t.values()) for t in results.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
