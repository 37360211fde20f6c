"""The ASGI application, built from validated settings (never at import time).

A Starlette application: the hot path's routes are plain Starlette routes that take the raw
request (bodies pass through unparsed), so FastAPI's per-request middleware (telemetry, body
limit, exit stack: about 5% of the proxy's CPU per request) never runs on a step. The control
plane (admin, tenants, sessions, feedback, helpers) is a FastAPI app behind the last route,
which matches only its paths: server/control.py says how the two live in one app.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from router.budget import open_store
from router.policies import PolicyConfigError
from server.control import ControlPlane, control_app
from server.errors import EscalatorError, InvalidRequest, NotFound
from server.feedback import FeedbackService
from server.http import ClientDisconnected, StepHeaders, error_response
from server.limits import RequestLimit
from server.metrics import Metrics
from server.responses.service import ResponsesService
from server.responses.store import open_response_store
from server.route_plans import RoutePlan, build_plans
from server.routes import openai, ops, responses
from server.service import ChatService
from server.sessions import SessionService
from server.settings import Settings
from server.steplog import StepLog
from server.tenancy import Tenancy
from server.tenants.directory import TenantDirectory
from server.tenants.store import open_tenant_store
from server.tenants.usage import UsageTally
from server.upstreams import Upstreams

log = logging.getLogger("escalator")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away; never sent


def create_app(settings: Settings, plans: dict[str, RoutePlan] | None = None) -> Starlette:
    """The proxy for validated settings, serving `plans` (server/route_plans.py: `escalator serve`
    builds them once, reading each helper artifact, before anything starts), or the plans
    built here from the settings."""
    if plans is None:
        plans = build_plans(settings)
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
        on_dropped=metrics.log_dropped.labels("queue_full").inc,
        on_unwritable=metrics.log_dropped.labels("unwritable").inc,
    )
    tracing = None
    if settings.telemetry is not None:  # the `otel` extra, loaded only when configured
        from server.otel import StepSpans, Tracing

        tracing = Tracing(settings.telemetry, _version())
    service = ChatService(settings, plans, store, upstreams, steplog, metrics, tracing)
    response_store = open_response_store(
        storage.budget_store,
        sqlite_path=storage.dir / "responses.db",
        redis_url=storage.redis_url,
        max_entries=storage.max_stored_responses,
    )
    metrics.info.labels(_version(), service.config_hash).set(1)
    usage = UsageTally()
    tenancy = Tenancy(settings)
    tenant_store = open_tenant_store(
        storage.budget_store,
        sqlite_path=storage.dir / "tenants.db",
        redis_url=storage.redis_url,
    )
    tenants = TenantDirectory(settings, tenant_store, store, tenancy, usage, metrics)

    def reload_on_signal() -> None:
        try:
            loaded = service.reload_helpers()
        except PolicyConfigError as exc:
            log.error("SIGHUP: helper reload refused, the running helpers stay: %s", exc)
        else:
            log.info("SIGHUP: helpers reloaded: %s", ", ".join(loaded))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        steplog.start()
        await tenants.start()
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
            await tenants.close()
            await upstreams.close()
            await store.close()
            await response_store.close()
            steplog.close()
            if tracing is not None:  # flushes the spans still queued
                await asyncio.to_thread(tracing.shutdown)

    handlers = _exception_handlers()
    control = control_app(handlers)
    app = Starlette(
        # The hot path first: a step never reaches the control plane's route.
        routes=[*openai.routes, *responses.routes, *ops.routes, ControlPlane(control)],
        middleware=[
            Middleware(StepHeaders, metrics=metrics, usage=usage),
            Middleware(RequestLimit, limit=settings.server.max_requests_in_flight, metrics=metrics),
            *([Middleware(StepSpans, tracing=tracing)] if tracing is not None else []),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    state = control.state = app.state  # one state: the control plane reads the same services
    state.settings = settings
    state.metrics = metrics
    state.store = store
    state.upstreams = upstreams
    state.steplog = steplog
    state.service = service
    state.responses = ResponsesService(settings, service, response_store)
    state.tenancy = tenancy
    state.tenants = tenants
    state.sessions = SessionService(
        store, steplog, metrics, storage.session_ttl_s, service.config_hash
    )
    state.feedback = FeedbackService(
        store, steplog, metrics, storage.session_ttl_s, service.config_hash
    )
    state.started_at = time.time()
    state.ready = {}
    state.ready_checked_at = float("-inf")

    return app


def _exception_handlers() -> dict[Any, ExceptionHandler]:
    async def escalator_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EscalatorError)
        return error_response(exc)

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            error: EscalatorError = NotFound(f"No such endpoint: {request.url.path}")
        else:
            error = InvalidRequest(str(exc.detail))
            error.status = exc.status_code
        return error_response(error)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            EscalatorError("The proxy hit an internal error; the request was not served.")
        )

    return {
        EscalatorError: escalator_error,
        ClientDisconnected: client_gone,
        HTTPException: http_error,
        Exception: unexpected,
    }


def _version() -> str:
    try:
        return version("escalator")
    except PackageNotFoundError:
        return "0+unknown"
