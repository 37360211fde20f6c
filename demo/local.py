"""The demo's default world: reasoning-gym tasks on the embedded local models.

The proxy the demo starts serves the two local models itself (its config names them as
`local` upstreams), exactly as `escalator serve` does with no configuration. The models
are assembled and checked here first, once, so a missing part or a full disk is reported
before anything else starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from demo.gym import GymWorkload
from demo.loop import DemoUpstreams
from server.local.embedded import BEST_OF_N
from server.local.models import STRONG, WEAK, ModelSetupError, assemble


class DemoSetupError(RuntimeError):
    pass


@contextmanager
def local_world(console: Console) -> Iterator[tuple[GymWorkload, DemoUpstreams]]:
    try:
        import reasoning_gym  # noqa: F401
    except ImportError:
        raise DemoSetupError(
            "the demo's tasks need reasoning-gym: pip install -e '.[local]'"
        ) from None
    for model in (WEAK, STRONG):
        console.print(f"model {model.name}: checking (assembled once into the cache)")
        try:
            assemble(model)
        except ModelSetupError as exc:
            raise DemoSetupError(str(exc)) from None
    yield (
        GymWorkload(),
        DemoUpstreams(
            {"local": WEAK.name}, WEAK.name, {"local": STRONG.name}, STRONG.name, (BEST_OF_N,)
        ),
    )
