"""`kill -9` never breaks "at most C" with the SQLite budget store.

A real `escalator serve` process takes concurrent escalating steps, one fresh session each,
and is killed with SIGKILL while they are in flight (right after a client has seen an
escalated answer), several times in a row, restarting on the same budget file. Then every
session asks for one more step. A reservation an escalation was sent on must have survived
the kill: no session may have been seen escalated more than C times.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from server.settings import hash_api_key
from tests.fake_upstream import FakeUpstream
from tests.helpers import answers, user, wait_until
from tests.servers import KEYS, free_port, proxy_config

C = 1  # one escalation per session: any reservation the kill forgets shows as a second
KILLS = 4
WORKERS = 16
AUTH = {"authorization": f"Bearer {KEYS['acme']}"}


class Proxy:
    """`escalator serve` on the SQLite store, in a process of its own."""

    def __init__(self, config_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "escalator", "serve", "--config", str(config_path)]
        command += ["--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(command)
        try:
            wait_until(lambda: answers(f"{self.url}/healthz"), timeout_s=20)
        except AssertionError:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


async def step(client: httpx.AsyncClient, session: str) -> bool | None:
    """Send one escalating step: True if the client saw it escalated, False if it went to
    the base model, None if the proxy went away before answering."""
    try:
        response = await client.post(
            "/v1/chat/completions",
            headers={"x-session-id": session},
            json={"model": "always", "messages": user()},
        )
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    return response.headers["x-escalator-action"] == "strong"


async def escalate_until_killed(
    proxy: Proxy, round_: int, kill_after: int, seen: Counter[str]
) -> list[str]:
    """Workers send steps in fresh sessions; the process is killed once `kill_after`
    escalations have been seen, with more still in flight. Returns the sessions used."""
    used: list[str] = []
    escalated = 0

    async def worker(w: int) -> None:
        nonlocal escalated
        async with httpx.AsyncClient(base_url=proxy.url, headers=AUTH, timeout=30) as client:
            for n in range(10_000):
                session = f"ep-{round_}-{w}-{n}"
                used.append(session)
                outcome = await step(client, session)
                if outcome is None:
                    return
                if outcome:
                    seen[session] += 1
                    escalated += 1
                    if escalated == kill_after:
                        proxy.kill()

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    return used


async def once_more(url: str, sessions: list[str], seen: Counter[str]) -> None:
    limit = asyncio.Semaphore(WORKERS)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:

        async def again(session: str) -> None:
            async with limit:
                if await step(client, session):
                    seen[session] += 1

        await asyncio.gather(*(again(s) for s in sessions))


@pytest.mark.slow
def test_sigkill_in_a_loop_never_gives_a_session_more_than_c_escalations(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    tenants: dict[str, Any] = {
        "acme": {"api_keys": [hash_api_key(KEYS["acme"])], "interventions_per_session": C}
    }
    config = proxy_config(
        fake_upstream.base_url,
        tmp_path / "data",
        storage={"dir": str(tmp_path / "data"), "budget_store": "sqlite"},
        tenants=tenants,
    )
    config_path = tmp_path / "escalator.toml"
    config_path.write_text(tomli_w.dumps(config))
    seen: Counter[str] = Counter()
    sessions: list[str] = []
    for round_ in range(KILLS):
        proxy = Proxy(config_path)
        try:
            sessions += asyncio.run(escalate_until_killed(proxy, round_, 40 + 15 * round_, seen))
        finally:
            if proxy.process.poll() is None:  # a worker failed before the kill
                proxy.kill()
        assert proxy.process.returncode == -signal.SIGKILL

    proxy = Proxy(config_path)
    try:
        asyncio.run(once_more(proxy.url, sessions, seen))
    finally:
        proxy.stop()
    over = {session: count for session, count in seen.items() if count > C}
    assert sum(seen.values()) >= KILLS * 40  # the kills came while steps escalated
    assert over == {}, f"{len(over)} sessions escalated more than C = {C} times: {over}"
