"""The demo's default world: reasoning-gym tasks on the embedded local models.

The models are assembled and checked first, once, so a missing part or a full disk is
reported before anything else starts. The demo then serves them itself, one llama.cpp
server per model for the whole run, and the proxies it starts name them by URL: each of
the three proxies of a run would otherwise load both models again.

One thread per model, for generation and for prompts alike. On 2 cores shared with other
work, llama.cpp's default (every core, for prompts too) was 4 to 10 times slower than one
thread (measured: 14 s against 1.5 s per 0.5B answer under a load of 10), since threads that
wait for each other stall whenever one is descheduled. With two episodes played at once the
two servers still keep both cores busy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console

from demo.gym import GymWorkload
from demo.loop import DemoUpstreams
from server.local.llama import LlamaServer
from server.local.models import STRONG, WEAK, ModelSetupError, assemble

THREADS = 1
CONTEXT = 2048  # tokens: a task, an answer and a retry need a few hundred


class DemoSetupError(RuntimeError):
    pass


@contextmanager
def local_world(console: Console, directory: Path) -> Iterator[tuple[GymWorkload, DemoUpstreams]]:
    try:
        import reasoning_gym  # noqa: F401
    except ImportError:
        raise DemoSetupError(
            "the demo's tasks need reasoning-gym: pip install -e '.[local]'"
        ) from None
    paths = {}
    for model in (WEAK, STRONG):
        console.print(
            f"model {model.name}: checking (assembled once into the cache)", soft_wrap=True
        )
        try:
            paths[model.name] = assemble(model)
        except ModelSetupError as exc:
            raise DemoSetupError(str(exc)) from None
    # llama-cpp-python's server reads settings it is not given on its command line from the
    # environment: its prompt threads (n_threads_batch) this way, its others as arguments.
    os.environ["N_THREADS_BATCH"] = str(THREADS)
    with ExitStack() as stack:
        servers = []
        for model in (WEAK, STRONG):
            server = LlamaServer(
                model_path=paths[model.name],
                alias=model.name,
                log_path=directory / "models" / f"{model.name}.log",
                n_ctx=CONTEXT,
                threads=THREADS,
            ).start()
            stack.callback(server.stop)
            servers.append(server)
        try:
            for server in servers:
                server.wait_ready()
        except ModelSetupError as exc:
            raise DemoSetupError(str(exc)) from None
        console.print("models ready: " + ", ".join(s.base_url for s in servers))
        weak, strong = ({"base_url": s.base_url} for s in servers)
        yield GymWorkload(), DemoUpstreams(weak, WEAK.name, strong, STRONG.name)
