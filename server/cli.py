"""`escalator serve`: validate the configuration, build the routes' plans (reading each helper
artifact once), then run the proxy under uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
import sys

from router.budget import BudgetStoreInUse
from server.route_plans import RoutePlan, load_plans
from server.settings import ConfigError, Settings, load_settings, validate_settings


def serve(config: str | None, *, host: str | None, port: int | None, log_level: str) -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings, plans = _configuration(config, host, port)
    except ConfigError as exc:
        print(f"escalator: {exc}", file=sys.stderr)
        return 2

    taken = _address_in_use(settings.server.host, settings.server.port)
    if taken:
        print(f"escalator: {taken}", file=sys.stderr)
        return 1
    try:
        if not any(u.local for u in settings.upstreams.values()):
            _run(settings, plans, log_level)
            return 0
        from server.local.models import ModelSetupError
        from server.local.runtime import local_upstreams

        try:
            with local_upstreams(settings) as ready:
                _run(ready, plans, log_level)
        except ModelSetupError as exc:
            print(f"escalator: {exc}", file=sys.stderr)
            return 1
    except BudgetStoreInUse as exc:
        print(f"escalator: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(settings: Settings, plans: dict[str, RoutePlan], log_level: str) -> None:
    import uvicorn

    from server.app import create_app
    from server.limits import ensure_open_files, uvicorn_options

    app = create_app(settings, plans)
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


def _address_in_use(host: str, port: int) -> str | None:
    """Why the proxy could not listen on host:port, found before anything starts (local
    models take minutes), or None. Port 0 (any free port) is always available."""
    if port == 0:
        return None
    # The family uvicorn binds: IPv6 only for a host written with a colon.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is in use: stop what holds it, or choose another "
                    "port with --port (or server.port in the configuration)"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def _configuration(
    config: str | None, host: str | None, port: int | None
) -> tuple[Settings, dict[str, RoutePlan]]:
    """The validated settings and the routes' plans built from them."""
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if config is None:
        from server.local.embedded import embedded_config

        source = "embedded default"
        data = embedded_config()
        data["server"] = {**data["server"], **overrides}
        settings = validate_settings(data, source=source)
    else:
        source = config
        settings = load_settings(config, overrides)
    return settings, load_plans(settings, source)
