"""SIMULATED worlds played through a real proxy: `escalator serve` in a child process, as a
user runs it, instead of the harness's in-process decisions (base.py `play`).

The proxy needs weak and strong upstreams; one simulated OpenAI-compatible server
(demo/sim/upstream.py) answers both. A world judges each step itself (`world.act(episode,
escalated)`), so the upstream's answer is ignored and the agent appends the world's own
assistant message: the state the proxy logs is exactly the world's transcript. Where the
world says how each model answers the step (`answers`), the upstream is scripted to answer
so (right answers alike, wrong ones apart), so the proxy's agreement checks compare what the
world's models would have said.

The proxy (demo/proxy.py) runs on a config written here: route `agent` (base
`weak`, one `strong` intervention of cost 1) on the policy given, one tenant with budget C,
exploration ε and content capture, storage in the directory given. Each episode is a
session (`X-Session-Id`); each step is POST /v1/chat/completions, escalated when its
`x-escalator-action` header says `strong`; with step rewards, each nonzero one goes to
POST /v1/sessions/{id}/feedback by the step's `x-request-id`; the outcome to .../outcome.
Several sessions are in flight at once. Stopping the proxy flushes its step log.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from demo.proxy import ProxyProcess, key_digest
from demo.sim.upstream import SimUpstream
from demo.worlds.base import INTERVENTION, World
from server.local.process import free_port

ROUTE = "agent"
TENANT = "bench"
ADMIN_KEY_ENV = "WORLDS_PROXY_ADMIN_KEY"  # set here; the proxy child inherits it
NEVER: dict[str, Any] = {"kind": "never"}


@dataclass(frozen=True)
class EpisodeFigures:
    success: bool
    interventions: int
    steps: int
    hard_steps: int  # hidden: what the world knew, never sent
    at_hard: int


class ProxyDriver:
    """The simulated upstream, and one `escalator serve` at a time over one storage dir."""

    def __init__(self, directory: Path, cap: int, concurrency: int = 12) -> None:
        self.directory = directory
        self.storage = directory / "data"
        self.cap = cap
        self.concurrency = concurrency
        self.key = "sk-worlds-" + secrets.token_hex(16)
        self.upstream = SimUpstream()
        self.proxy: ProxyProcess | None = None
        os.environ.setdefault(ADMIN_KEY_ENV, secrets.token_hex(16))

    @property
    def logs(self) -> Path:
        return self.storage / "logs"

    @property
    def installed(self) -> Path:
        """Where `escalator train --install` puts the helper the proxy serves."""
        return self.storage / "helpers" / "current"

    def __enter__(self) -> ProxyDriver:
        self.upstream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.upstream.stop()

    def serve(
        self, policy: dict[str, Any], exploration: float, base_checks: float | None = None
    ) -> ProxyProcess:
        """(Re)start the proxy with the route on `policy` and the tenant exploring at ε,
        checking `base_checks` of its base steps (default: the proxy's, ε)."""
        self.stop()
        config = self.config(policy, exploration, base_checks)
        proxy = ProxyProcess(config, self.directory / "proxy")
        self.proxy = proxy.start()
        return self.proxy

    def stop(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy.stop()  # SIGTERM: the step log is flushed

    def config(
        self, policy: dict[str, Any], exploration: float, base_checks: float | None = None
    ) -> dict[str, Any]:
        upstream = {"base_url": self.upstream.base_url, "timeout_s": 30.0}
        strong = {"kind": "strong", "upstream": "strong", "model": "sim-strong", "cost": 1}
        return {
            "server": {"host": "127.0.0.1", "port": free_port(), "admin_key_env": ADMIN_KEY_ENV},
            "storage": {"dir": str(self.storage), "budget_store": "sqlite"},
            "upstreams": {"weak": upstream, "strong": dict(upstream)},
            "routes": {
                ROUTE: {
                    "base": {"upstream": "weak", "model": "sim-weak"},
                    "policy": policy,
                    "interventions": [strong],
                }
            },
            "tenants": {
                TENANT: {
                    "api_keys": [key_digest(self.key)],
                    "interventions_per_session": self.cap,
                    "exploration": exploration,
                    "capture_content": True,
                    **({} if base_checks is None else {"base_step_checks": base_checks}),
                }
            },
        }

    def play(
        self, world: World[Any], episodes: int, seed: int, label: str, step_rewards: bool = False
    ) -> dict[str, float]:
        """Play episodes 0..episodes-1 of `seed` through the running proxy, as sessions
        `<world>-<label>-<seed>-<index>`; the figures of base.py `evaluate`."""
        played = asyncio.run(self._play_all(world, episodes, seed, label, step_rewards))
        return figures(played)

    async def _play_all(
        self, world: World[Any], episodes: int, seed: int, label: str, step_rewards: bool
    ) -> list[EpisodeFigures]:
        if self.proxy is None:
            raise RuntimeError("no proxy is running: serve() first")
        todo = iter(range(episodes))
        played: list[EpisodeFigures] = []
        limits = httpx.Limits(max_connections=self.concurrency)
        headers = {"authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(
            base_url=self.proxy.url, headers=headers, limits=limits, timeout=60
        ) as client:

            async def worker() -> None:
                for index in todo:  # one shared iterator: each episode is played once
                    session = f"{world.name}-{label}-{seed}-{index}"
                    played.append(
                        await play_episode(
                            client, self.upstream, world, index, seed, session, step_rewards
                        )
                    )

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return played

    def reload(self) -> list[str]:
        """POST /admin/helpers/reload: each route's policy as the proxy loaded it."""
        if self.proxy is None:
            raise RuntimeError("no proxy is running: serve() first")
        admin = {"authorization": f"Bearer {os.environ[ADMIN_KEY_ENV]}"}
        answer = httpx.post(f"{self.proxy.url}/admin/helpers/reload", headers=admin, timeout=30)
        answer.raise_for_status()
        return [str(line) for line in answer.json()["reloaded"]]

    def decisions(self, prefix: str) -> Counter[str]:
        """How the logged steps of sessions named `prefix...` were decided ("policy /
        reason"), and their agreement checks; read after stop(), when the log is flushed."""
        counts: Counter[str] = Counter()
        for path in sorted(self.logs.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if not str(record.get("session")).startswith(prefix):
                    continue
                if record.get("kind") == "step":
                    decision = record.get("decision") or {}
                    counts[f"{decision.get('policy')} / {decision.get('reason')}"] += 1
                elif record.get("kind") == "agreement":
                    counts["agreement checks (" + _agreed(record["agreement"]) + ")"] += 1
        return counts


async def play_episode(
    client: httpx.AsyncClient,
    upstream: SimUpstream,
    world: World[Any],
    index: int,
    seed: int,
    session: str,
    step_rewards: bool,
) -> EpisodeFigures:
    """One episode as an agent plays it through the proxy, reporting what its environment
    says: the step rewards (with `step_rewards`) and the outcome."""
    episode = world.new_episode(index, seed)
    headers = {"x-session-id": session}
    answers = getattr(world, "answers", None)
    used = hard_steps = at_hard = 0
    while not episode.done:
        messages = list(episode.messages)
        body = {"model": ROUTE, "messages": messages}
        if answers is not None:  # the simulated models answer as the world's would
            strong_right, weak_right = answers(episode)
            upstream.script(messages, _said(weak_right), _said(strong_right))
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
        response.raise_for_status()
        escalated = response.headers["x-escalator-action"] == INTERVENTION
        hard = episode.hard
        used += escalated
        hard_steps += hard
        at_hard += escalated and hard
        reward = world.act(episode, escalated)
        if step_rewards and reward != 0.0:
            report = {"request_id": response.headers["x-request-id"], "reward": reward}
            answer = await client.post(f"/v1/sessions/{session}/feedback", json=report)
            answer.raise_for_status()
    success = world.succeeded(episode)
    answer = await client.post(f"/v1/sessions/{session}/outcome", json={"success": success})
    answer.raise_for_status()
    return EpisodeFigures(success, used, episode.step, hard_steps, at_hard)


def _agreed(value: float) -> str:
    return "agree" if value == 1.0 else "differ"


def _said(right: bool) -> dict[str, Any]:
    """A simulated model's answer to a scripted state: right answers are alike, wrong ones
    differ from each other."""
    action = "the right move" if right else f"a slip {secrets.token_hex(4)}"
    return {"role": "assistant", "content": f"ACTION: {action}"}


def figures(played: list[EpisodeFigures]) -> dict[str, float]:
    n = max(len(played), 1)
    used = sum(e.interventions for e in played)
    return {
        "episodes": float(len(played)),
        "success": sum(e.success for e in played) / n,
        "interventions": used / n,
        "at_hard": sum(e.at_hard for e in played) / used if used else 0.0,
        "hard_steps": sum(e.hard_steps for e in played) / n,
        "steps": sum(e.steps for e in played) / n,
    }
