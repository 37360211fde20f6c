"""The proxy the demo drives: `escalator serve` in a child process, on a config it writes.

The demo talks to it over HTTP only, as any agent would (and as DESIGN.md wants: training
code never runs inside the proxy). Stopping it sends SIGTERM, so the step log is flushed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from server.local.process import log_tail, start_child, stop_process_group

SERVE = (sys.executable, "-m", "escalator", "serve")


class ProxyError(RuntimeError):
    pass


def key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


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
        self.process = start_child(
            [*SERVE, "--config", str(path), "--log-level", "warning"],
            self.directory / "proxy.log",
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
        stop_process_group(process, timeout_s=20)  # SIGTERM first: the step log is flushed

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.directory / "proxy.log", lines)
