"""Real servers for tests: the proxy under uvicorn on a thread, and redis-server."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from server.app import create_app
from server.settings import hash_api_key, validate_settings

KEYS = {"acme": "sk-acme-test", "globex": "sk-globex-test"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_config(upstream_url: str, data_dir: Path, **sections: Any) -> dict[str, Any]:
    """A configuration with one upstream per role (both on the fake) and two tenants.

    Routes: `agent` (threshold policy), `always`, `never`; `fragile` (its intervention
    fails), `stalling` (its intervention never answers), `broken` (everything fails).
    Each section given replaces or extends the defaults.
    """
    strong = {"kind": "strong", "upstream": "strong", "model": "strong-model", "cost": 1}
    config: dict[str, Any] = {
        "server": {"max_body_bytes": 64 * 1024},
        "storage": {"dir": str(data_dir), "budget_store": "memory"},
        "upstreams": {
            "weak": {
                "base_url": upstream_url,
                "timeout_s": 1,
                "models": [
                    "echo",
                    "stall",
                    "slow-0.5",
                    "error-500",
                    "html-502",
                    "429",
                    "bad-request",
                    "die-mid-stream",
                    "not-json-200",
                ],
            },
            "strong": {"base_url": upstream_url, "timeout_s": 1},
        },
        "routes": {
            "agent": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "threshold", "threshold": 0.5},
                "interventions": [strong],
            },
            "always": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "always"},
                "interventions": [strong],
            },
            "never": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "never"},
                "interventions": [strong],
            },
            "stalling": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "always"},
                "interventions": [{**strong, "model": "stall-strong"}],
            },
            "broken": {
                "base": {"upstream": "weak", "model": "error-500-weak"},
                "policy": {"kind": "always"},
                "interventions": [{**strong, "model": "error-500-strong"}],
            },
            "fragile": {
                "base": {"upstream": "weak", "model": "weak-model"},
                "policy": {"kind": "always"},
                "interventions": [{**strong, "model": "error-500-strong"}],
            },
        },
        "tenants": {
            "acme": {
                "api_keys": [hash_api_key(KEYS["acme"])],
                "interventions_per_session": 2,
                "capture_content": True,
            },
            "globex": {"api_keys": [hash_api_key(KEYS["globex"])], "interventions_per_session": 1},
        },
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


class RunningProxy:
    """The real app under uvicorn on 127.0.0.1, on a thread of its own."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.settings = validate_settings(config)
        self.app: Starlette = create_app(self.settings)
        # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections
        # only for sockets that say they are TCP, and Nagle would add 40 ms to each answer.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._sock.close()

    @property
    def state(self) -> Any:
        return self.app.state


class RedisServer:
    """A throwaway redis-server on loopback, no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self._process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
