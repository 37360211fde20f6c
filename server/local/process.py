"""Child processes Escalator starts on loopback (model servers, the demo's proxy): a free
port to give them, their log's tail when they fail, and stopping their whole process group."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dying_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGTERM the child when the process that started it
    dies, however it dies (a second Ctrl-C, SIGKILL, a crash), so a model server is never
    left running without its proxy. Linux only; elsewhere None (stopping stays explicit)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_death_signal


def start_child(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own (so `stop_process_group` stops all of
    it), its output appended to `log_path`, dying with this process."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=dying_with_parent(),
        )


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
