"""Operations: Prometheus metrics, liveness and readiness."""

from __future__ import annotations

import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.http import json_response

_READY_CACHE_S = 2.0


async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.log_queue_depth.set(state.steplog.depth())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return json_response(b'{"status":"ok"}')


async def readyz(request: Request) -> Response:
    """Ready when the budget store answers and at least one upstream lists its models.
    Probes are cached briefly so a tight load-balancer loop cannot flood the upstreams."""
    state = request.app.state
    now = time.monotonic()
    if now - state.ready_checked_at > _READY_CACHE_S:
        try:
            store_ok = await state.store.ping()
        except Exception:  # the store's client raises its own error types
            store_ok = False
        upstream_ok = await state.upstreams.any_ready()
        state.ready = {"budget_store": store_ok, "upstreams": upstream_ok}
        state.ready_checked_at = now
    ready = all(state.ready.values())
    body = {"status": "ready" if ready else "not ready", **state.ready}
    return json_response(orjson.dumps(body), status=200 if ready else 503)


routes = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
