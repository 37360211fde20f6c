"""The proxy the demo drives: `escalator serve` in a child process, on a config it writes.

The demo talks to it over HTTP only, as any agent would (and as DESIGN.md wants: training
code never runs inside the proxy). Stopping it sends SIGTERM, so the step log is flushed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import tomli_w

SERVE = (sys.executable, "-m", "escalator", "serve")


class ProxyError(RuntimeError):
    pass


def key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ProxyProcess:
    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.port = int(config["server"]["port"])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ProxyProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "escalator.toml"
        path.write_text(tomli_w.dumps(self.config))
        with (self.directory / "proxy.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*SERVE, "--config", str(path), "--log-level", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProxyError(f"the proxy exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ProxyError(f"the proxy did not start in {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.directory / "proxy.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
