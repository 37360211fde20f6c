"""`escalator serve`: validate the configuration, then run the proxy under uvicorn."""

from __future__ import annotations

import logging
import sys

from router.budget import BudgetStoreInUse
from server.settings import ConfigError, Settings, load_settings, validate_settings


def serve(config: str | None, *, host: str | None, port: int | None, log_level: str) -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = _settings(config, host, port)
    except ConfigError as exc:
        print(f"escalator: {exc}", file=sys.stderr)
        return 2

    try:
        if not any(u.local for u in settings.upstreams.values()):
            _run(settings, log_level)
            return 0
        from server.local.models import ModelSetupError
        from server.local.runtime import local_upstreams

        try:
            with local_upstreams(settings) as ready:
                _run(ready, log_level)
        except ModelSetupError as exc:
            print(f"escalator: {exc}", file=sys.stderr)
            return 1
    except BudgetStoreInUse as exc:
        print(f"escalator: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(settings: Settings, log_level: str) -> None:
    import uvicorn

    from server.app import create_app
    from server.limits import ensure_open_files, uvicorn_options

    app = create_app(settings)
    ensure_open_files(settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        access_log=False,
        loop="auto",
        timeout_graceful_shutdown=30,
        **uvicorn_options(settings, app.state.metrics),
    )


def _settings(config: str | None, host: str | None, port: int | None) -> Settings:
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if config is None:
        from server.local.embedded import embedded_config

        data = embedded_config()
        data["server"] = {**data["server"], **overrides}
        return validate_settings(data, source="embedded default")
    return load_settings(config, overrides)
