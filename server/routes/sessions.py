"""Session endpoints: budget state, and the episode's outcome (the training label)."""

from __future__ import annotations

import orjson
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import InvalidRequest
from server.http import caller_of, json_response, read_json_object
from server.sessions import SessionService

_MAX_OUTCOME_BYTES = 64 * 1024


class OutcomeReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    success: StrictBool
    reward: float | None = None


async def describe_session(request: Request) -> Response:
    session: str = request.path_params["session"]
    caller = caller_of(request)
    sessions: SessionService = request.app.state.sessions
    return json_response(orjson.dumps(await sessions.describe(caller, session)))


async def report_outcome(request: Request) -> Response:
    session: str = request.path_params["session"]
    caller = caller_of(request)
    body, _ = await read_json_object(request, _MAX_OUTCOME_BYTES)
    try:
        report = OutcomeReport.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"Invalid outcome: {param}: {first['msg']}", param=param) from None
    sessions: SessionService = request.app.state.sessions
    result = await sessions.report_outcome(caller, session, report.success, report.reward)
    return json_response(orjson.dumps(result))


routes = [
    Route("/v1/sessions/{session}", describe_session, methods=["GET"]),
    Route("/v1/sessions/{session}/outcome", report_outcome, methods=["POST"]),
]
