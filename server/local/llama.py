"""Local model servers: one `llama_cpp.server` process per model, on loopback.

llama-cpp-python's server holds one model per process and speaks the OpenAI API, so each
local upstream is a child process that Escalator starts, waits for, and stops. Its output
goes to a log file beside the proxy's data (it is chatty), and a server that dies while
starting is reported with the tail of that log.

The child runs llama-cpp-python's server through `server.local.llama_chat`, whose chat
format (`escalator-tools`: the model's own chat template) answers with OpenAI tool calls
rather than the model's `<tool_call>` text (server/local/tool_calls.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from server.local.models import ModelSetupError
from server.local.process import free_port, log_tail, start_child, stop_process_group

# The chat format server.local.llama_chat registers in the child.
CHAT_FORMAT = "escalator-tools"


@dataclass
class LlamaServer:
    model_path: Path
    alias: str
    log_path: Path
    port: int = 0
    n_ctx: int = 4096
    threads: int = max(os.cpu_count() or 1, 1)
    chat_format: str = CHAT_FORMAT
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelSetupError(
                "llama-cpp-python is not installed: pip install -e '.[local]' "
                "(it compiles llama.cpp: about 6 minutes, needs gcc, g++ and cmake)"
            )
        self.port = self.port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "server.local.llama_chat",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--chat_format",
            self.chat_format,
        ]
        self.process = start_child(command, self.log_path)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ModelSetupError(
                    f"the local server for {self.alias} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with urlopen(f"{self.base_url}/models", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise ModelSetupError(
            f"the local server for {self.alias} did not answer in {timeout_s:.0f} s:\n"
            + self.log_tail()
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process_group(process, timeout_s=10)

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)
