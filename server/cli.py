"""`escalator serve`: validate the configuration, then run the proxy under uvicorn."""

from __future__ import annotations

import logging
import sys

from server.settings import ConfigError, Settings, load_settings


def serve(config: str | None, *, host: str | None, port: int | None, log_level: str) -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = _settings(config, host, port)
    except ConfigError as exc:
        print(f"escalator: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from server.app import create_app

    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        access_log=False,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=30,
    )
    return 0


def _settings(config: str | None, host: str | None, port: int | None) -> Settings:
    if config is None:
        raise ConfigError(
            "no --config given. The embedded local default (real small models on this "
            "machine) is not built yet; pass a configuration file, "
            "e.g. deploy/escalator.example.toml"
        )
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    return load_settings(config, overrides)
