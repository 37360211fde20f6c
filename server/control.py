"""The control plane: a FastAPI application inside the proxy's Starlette application.

Two kinds of routes live in one app. The hot path (`/v1/chat/completions`,
`/v1/responses`, `/v1/completions`, `/v1/models`) and the operations endpoints are plain
Starlette routes that take the raw request: bodies pass through unparsed, and nothing of
FastAPI (its middleware, dependency solving, response validation) runs on a step. The control
plane (admin, tenants, sessions with outcomes and feedback, helpers) is a FastAPI app with
pydantic models, so `/openapi.json` and `/docs` describe it and clients can be generated.

The Starlette app's route list ends with one `ControlPlane` route that matches exactly the
paths the FastAPI app serves and hands those requests to it. The hot-path routes come first,
so a step never looks at it; a control-plane request passes the outer middleware (request
ids, limits) and then FastAPI's. Both apps share one `state` and raise the same errors,
answered in OpenAI's envelope: a body or parameter FastAPI refuses is a 400, never its
default `{"detail": ...}` 422.

Request bodies are read by the proxy's own reader (server/routes/deps.py), as the hot path
reads them, then validated by their pydantic model.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ExceptionHandler, Receive, Scope, Send

from server.errors import InvalidRequest
from server.http import error_response
from server.routes import admin, sessions, tenants


def control_app(handlers: Mapping[Any, ExceptionHandler]) -> FastAPI:
    """The control plane's FastAPI app, answering errors with `handlers` (the proxy's)."""
    app = FastAPI(
        title="Escalator control plane",
        version=_version(),
        description=(
            "Tenants, keys, budgets and usage (admin key), helpers (admin key), and sessions: "
            "budget state, outcomes and step feedback (the tenant's API key). The OpenAI "
            "endpoints (/v1/chat/completions, /v1/responses, ...) follow OpenAI's own "
            "specification and are not described here."
        ),
        exception_handlers={**handlers, RequestValidationError: _invalid_parameter},  # type: ignore[dict-item]
    )
    for module in (sessions, tenants, admin):
        app.include_router(module.router)
    app.openapi = lambda: _with_envelopes(app)  # type: ignore[method-assign]
    return app


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(BaseModel):
    """OpenAI's error envelope: every error the proxy answers has this shape."""

    error: ErrorBody


_ERRORS = {
    "400": "invalid request",
    "401": "no key, or not a valid one",
    "404": "not found (on /admin: also the admin API being off)",
    "503": "a store is unavailable; retry later",
}
_BODY_ERRORS = {"408": "the body did not arrive in time", "413": "the body is too large"}


def _with_envelopes(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, saying what the proxy really answers on errors: the envelope, and a
    400 (never FastAPI's 422) for a body or parameter that does not validate."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs"))
    components["ErrorEnvelope"] = envelope
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for operation in (op for path in schema["paths"].values() for op in path.values()):
        responses = operation["responses"]
        responses.pop("422", None)
        errors = {**_ERRORS, **(_BODY_ERRORS if "requestBody" in operation else {})}
        for status, description in errors.items():
            responses.setdefault(status, {"description": description})
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                response["content"] = content
    app.openapi_schema = schema
    return schema


class ControlPlane(BaseRoute):
    """The route that hands a request to the control plane's app: a full match where one of
    its routes matches the path and method, a partial one where only the path does (so the
    outer router answers 405 as it would for its own routes)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        found = Match.NONE
        if scope["type"] == "http":
            for route in self.app.router.routes:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    return Match.FULL, {}
                if match is Match.PARTIAL:
                    found = Match.PARTIAL
        return found, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _invalid_parameter(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    where, *path = first["loc"]
    param = ".".join(str(p) for p in path) or None
    return error_response(
        InvalidRequest(f"Invalid {where} parameter '{param}': {first['msg']}", param=param)
    )


def _version() -> str:
    try:
        return version("escalator")
    except PackageNotFoundError:
        return "0+unknown"
