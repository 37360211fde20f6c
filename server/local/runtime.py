"""Start the local upstreams a configuration names, and stop them when the proxy stops."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.local.llama import LlamaServer
from server.local.models import CATALOGUE, assemble
from server.settings import Settings, UpstreamSettings

log = logging.getLogger("escalator.local")


@contextmanager
def local_upstreams(settings: Settings) -> Iterator[Settings]:
    """Serve every `local` upstream of `settings`; yield the settings with their URLs."""
    servers: list[LlamaServer] = []
    upstreams = dict(settings.upstreams)
    try:
        for name, upstream in settings.upstreams.items():
            if upstream.local is None:
                continue
            model = CATALOGUE[upstream.local]
            log.info(
                "local upstream %s: preparing %s (assembled once, then cached)", name, model.name
            )
            path = assemble(model)
            server = LlamaServer(
                model_path=path,
                alias=model.name,
                log_path=Path(settings.storage.dir) / "local" / f"{name}.log",
                n_ctx=upstream.local_context,
            ).start()
            servers.append(server)
        for server in servers:
            server.wait_ready()
            log.info("local upstream %s ready at %s", server.alias, server.base_url)
        ready = iter(servers)
        for name, upstream in settings.upstreams.items():
            if upstream.local is not None:
                # Started, it is a server like any other (validated as one: exactly one of
                # base_url and local).
                served = {**upstream.model_dump(), "base_url": next(ready).base_url, "local": None}
                upstreams[name] = UpstreamSettings.model_validate(served)
        yield settings.model_copy(update={"upstreams": upstreams})
    finally:
        for server in servers:
            server.stop()
