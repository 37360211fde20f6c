"""The FastAPI application, built from validated settings (never at import time)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from router.budget import open_store
from router.policies import PolicyConfigError
from server.errors import EscalatorError, InvalidRequest, NotFound
from server.http import ClientDisconnected, StepHeaders, error_response
from server.metrics import Metrics
from server.routes import admin, openai, ops, sessions
from server.service import ChatService
from server.sessions import SessionService
from server.settings import Settings
from server.steplog import StepLog
from server.tenancy import Tenancy
from server.upstreams import Upstreams

log = logging.getLogger("escalator")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away; never sent


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    storage = settings.storage
    store = open_store(
        storage.budget_store,
        sqlite_path=storage.dir / "budget.db",
        redis_url=storage.redis_url,
    )
    upstreams = Upstreams.from_settings(settings.upstreams)
    steplog = StepLog(
        storage.dir / "logs",
        segment_bytes=storage.log_segment_bytes,
        queue_size=storage.log_queue_size,
        on_written=lambda kind: metrics.log_records.labels(kind).inc(),
        on_dropped=metrics.log_dropped.inc,
    )
    service = ChatService(settings, store, upstreams, steplog, metrics)
    metrics.info.labels(_version(), service.config_hash).set(1)

    def reload_on_signal() -> None:
        try:
            loaded = service.reload_helpers()
        except PolicyConfigError as exc:
            log.error("SIGHUP: helper reload refused, the running helpers stay: %s", exc)
        else:
            log.info("SIGHUP: helpers reloaded: %s", ", ".join(loaded))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        steplog.start()
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_on_signal)
        log.info(
            "escalator ready: %d route(s), %d upstream(s), budget store %s, logs in %s",
            len(settings.routes),
            len(settings.upstreams),
            storage.budget_store,
            steplog.directory,
        )
        try:
            yield
        finally:
            await service.drain()
            await upstreams.close()
            await store.close()
            steplog.close()

    app = FastAPI(
        title="Escalator",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    state = app.state
    state.settings = settings
    state.metrics = metrics
    state.store = store
    state.upstreams = upstreams
    state.steplog = steplog
    state.service = service
    state.tenancy = Tenancy(settings)
    state.sessions = SessionService(
        store, steplog, metrics, storage.session_ttl_s, service.config_hash
    )
    state.started_at = time.time()
    state.ready = {}
    state.ready_checked_at = float("-inf")

    # Plain Starlette routes: the handlers take the raw request (bodies pass through
    # unparsed by pydantic), and skipping FastAPI's dependency solving is measurably faster.
    app.router.routes.extend([*openai.routes, *sessions.routes, *ops.routes, *admin.routes])
    app.add_middleware(StepHeaders, metrics=metrics)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EscalatorError)
    async def escalator_error(request: Request, exc: EscalatorError) -> Response:
        return error_response(exc)

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            error: EscalatorError = NotFound(f"No such endpoint: {request.url.path}")
        else:
            error = InvalidRequest(str(exc.detail))
            error.status = exc.status_code
        return error_response(error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            EscalatorError("The proxy hit an internal error; the request was not served.")
        )


def _version() -> str:
    try:
        return version("escalator")
    except PackageNotFoundError:
        return "0+unknown"
