"""`/v1/responses`: create (an agent step, like a chat completion), read, list its input
items, and delete a stored response."""

from __future__ import annotations

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
from server.responses.checks import check_responses_body
from server.responses.service import ItemsPage, ResponsesService
from server.sessions import session_id_of

MAX_LISTED = 100  # OpenAI's most input items per page


async def create_response(request: Request) -> Response:
    app = request.app.state
    caller, trace = caller_of(request), trace_of(request)
    body, raw = await read_json_object(request, app.settings.server.max_body_bytes)
    check_responses_body(body, raw)
    session = session_id_of(request.headers, body)
    service: ResponsesService = app.responses
    reply = await until_disconnected(request, service.create(caller, body, raw, trace, session))
    if reply.stream is not None:
        return SseResponse(reply.stream)
    assert reply.body is not None
    return json_response(reply.body)


async def get_response(request: Request) -> Response:
    service: ResponsesService = request.app.state.responses
    body = await service.get(caller_of(request), request.path_params["response_id"])
    return json_response(body)


async def list_input_items(request: Request) -> Response:
    service: ResponsesService = request.app.state.responses
    caller = caller_of(request)
    page = _page(request)
    body = await service.input_items(caller, request.path_params["response_id"], page)
    return json_response(body)


def _page(request: Request) -> ItemsPage:
    query = request.query_params
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LISTED:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_LISTED}.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    return ItemsPage(int(limit), order, query.get("after"))


async def delete_response(request: Request) -> Response:
    service: ResponsesService = request.app.state.responses
    body = await service.delete(caller_of(request), request.path_params["response_id"])
    return json_response(body)


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
