"""The OpenAI-compatible endpoints: chat completions (the agent's step), completions, models."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import InvalidRequest
from server.http import (
    SseResponse,
    caller_of,
    json_response,
    read_json_object,
    trace_of,
    until_disconnected,
)
from server.service import ChatService, StepReply
from server.validation import check_chat_body, check_routed_step, require_model

MAX_SESSION_ID_CHARS = 512  # OpenAI's limit on a metadata value


async def chat_completions(request: Request) -> Response:
    app = request.app.state
    caller, trace = caller_of(request), trace_of(request)
    body, raw = await read_json_object(request, app.settings.server.max_body_bytes)
    check_chat_body(body)
    service: ChatService = app.service
    route = app.settings.routes.get(body["model"])
    if route is not None:
        check_routed_step(body, raw, max_n=route.max_n)
    trace.session = session_id_of(request, body) or trace.request_id
    trace.one_step = trace.session == trace.request_id
    return _to_response(await until_disconnected(request, service.chat(caller, body, raw, trace)))


async def completions(request: Request) -> Response:
    app = request.app.state
    caller, trace = caller_of(request), trace_of(request)
    body, _ = await read_json_object(request, app.settings.server.max_body_bytes)
    require_model(body)
    if "prompt" not in body:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt")
    service: ChatService = app.service
    return _to_response(await until_disconnected(request, service.complete(caller, body, trace)))


async def models(request: Request) -> Response:
    app = request.app.state
    caller_of(request)
    service: ChatService = app.service
    created = int(app.started_at)
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "escalator"}
        for name in service.routes
    ]
    data += [
        {"id": model, "object": "model", "created": created, "owned_by": upstream}
        for model, upstream in service.passthrough.items()
    ]
    return json_response(orjson.dumps({"object": "list", "data": data}))


def _to_response(reply: StepReply) -> Response:
    if reply.stream is not None:
        return SseResponse(reply.stream)
    assert reply.body is not None
    return json_response(reply.body)


def session_id_of(request: Request, body: dict[str, Any]) -> str | None:
    """The session a step names: `X-Session-Id`, else `metadata.session_id`; 400 if bad."""
    session = request.headers.get("x-session-id")
    param = "X-Session-Id"
    if session is None:
        metadata = body.get("metadata")
        session = metadata.get("session_id") if isinstance(metadata, dict) else None
        param = "metadata.session_id"
    if session is None:
        return None
    if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION_ID_CHARS:
        raise InvalidRequest(
            f"{param} must be a string of 1 to {MAX_SESSION_ID_CHARS} characters.", param=param
        )
    return session


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
