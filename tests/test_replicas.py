"""Two proxy processes sharing one redis-server: budgets hold across replicas, and a session
moves between them without losing its step index."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import tomli_w

from tests.fake_upstream import FakeUpstream
from tests.helpers import answers, user, wait_until
from tests.servers import KEYS, RedisServer, free_port, proxy_config

pytestmark = pytest.mark.redis


class Replicas(list[str]):
    """The replicas' base URLs; `stop` shuts them down gracefully (SIGTERM)."""

    def __init__(self, urls: list[str], processes: list[subprocess.Popen[bytes]], logs: Path):
        super().__init__(urls)
        self.processes = processes
        self.logs = logs

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        hung = []
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:  # killed, so that it outlives no test
                hung.append(process.pid)
                process.kill()
                process.wait()
        assert not hung, f"replicas {hung} did not shut down within 15 s of SIGTERM"
        # uvicorn re-raises SIGTERM after its graceful shutdown has finished.
        codes = [process.returncode for process in self.processes]
        assert all(code in (0, -signal.SIGTERM) for code in codes), codes


@pytest.fixture
def replicas(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Replicas]:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    config = proxy_config(
        fake_upstream.base_url,
        tmp_path / "data",
        storage={"budget_store": "redis", "redis_url": redis_server.url},
        tenants={
            "acme": {
                "api_keys": proxy_config("", tmp_path)["tenants"]["acme"]["api_keys"],
                "interventions_per_session": 5,
                "interventions_per_day": 12,
            },
        },
    )
    path = tmp_path / "escalator.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "escalator",
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
        )
        for port in ports
    ]
    running = Replicas(
        [f"http://127.0.0.1:{port}" for port in ports], processes, tmp_path / "data" / "logs"
    )
    try:
        for url in running:
            wait_until(lambda url=url: answers(f"{url}/healthz"), timeout_s=20)
        yield running
    finally:
        running.stop()


async def _step(client: httpx.AsyncClient, url: str, session: str) -> httpx.Response:
    return await client.post(
        f"{url}/v1/chat/completions",
        json={"model": "always", "messages": user()},
        headers={"x-session-id": session},
    )


async def test_the_session_budget_holds_across_replicas_under_load(replicas: list[str]) -> None:
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        responses = await asyncio.gather(
            *(_step(client, replicas[i % 2], "shared") for i in range(60))
        )
        assert all(r.status_code == 200 for r in responses)
        actions = [r.headers["x-escalator-action"] for r in responses]
        assert actions.count("strong") == 5
        session = (await client.get(f"{replicas[1]}/v1/sessions/shared")).json()
    assert session["steps"] == 60 and session["interventions_used"] == 5


async def test_the_tenant_daily_cap_holds_across_replicas(replicas: list[str]) -> None:
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        responses = await asyncio.gather(
            *(_step(client, replicas[i % 2], f"ep-{i % 8}") for i in range(80))
        )
    actions = [r.headers["x-escalator-action"] for r in responses]
    assert actions.count("strong") == 12


def test_a_session_moves_between_replicas_keeping_its_step_index(replicas: Replicas) -> None:
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-session-id": "roaming"}
    with httpx.Client(headers=headers) as client:
        for i in range(6):
            client.post(
                f"{replicas[i % 2]}/v1/chat/completions",
                json={"model": "never", "messages": user()},
            )
        assert client.get(f"{replicas[0]}/v1/sessions/roaming").json()["steps"] == 6
    replicas.stop()  # a graceful stop flushes each replica's step log
    segments = sorted(replicas.logs.glob("*.jsonl"))
    assert len(segments) == 2  # one per replica
    steps = sorted(
        orjson.loads(line)["step"] for path in segments for line in path.read_bytes().splitlines()
    )
    assert steps == [0, 1, 2, 3, 4, 5]
