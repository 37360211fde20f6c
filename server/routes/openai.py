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
from server.sessions import session_id_of
from server.validation import check_chat_body, check_routed_step, require_model


async def chat_completions(request: Request) -> Response:
    app = request.app.state
    caller, trace = caller_of(request), trace_of(request)
    body, raw = await read_json_object(request, app.settings.server.max_body_bytes)
    check_chat_body(body)
    service: ChatService = app.service
    route = app.settings.routes.get(body["model"])
    if route is not None:
        check_routed_step(body, raw, max_n=route.max_n)
    session = session_id_of(request.headers, body)
    step = service.chat(caller, body, raw, trace, session)
    return _to_response(await until_disconnected(request, step))


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


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
