"""Child processes Escalator starts on loopback (model servers, the demo's proxy): a free
port to give them, their log's tail when they fail, and stopping their whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process_group(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM the process's group (it was started with start_new_session), SIGKILL it if
    it has not exited within `timeout_s`."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def log_tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
