"""Session endpoints: budget state, the episode's outcome (the training label), and step
feedback (a reward for one step)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import InvalidRequest
from server.feedback import FeedbackService
from server.http import caller_of, json_response, read_json_object
from server.sessions import SessionService

_MAX_REPORT_BYTES = 64 * 1024
_MAX_IDEMPOTENCY_KEY_CHARS = 255

Report = TypeVar("Report", bound=BaseModel)


class OutcomeReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    success: StrictBool
    reward: float | None = None


class FeedbackReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    request_id: Annotated[StrictStr, Field(min_length=1)] | None = None
    step: StrictInt | None = None
    reward: Annotated[float, Strict(), AllowInfNan(False)]


async def describe_session(request: Request) -> Response:
    session: str = request.path_params["session"]
    caller = caller_of(request)
    sessions: SessionService = request.app.state.sessions
    return json_response(orjson.dumps(await sessions.describe(caller, session)))


async def report_outcome(request: Request) -> Response:
    session: str = request.path_params["session"]
    caller = caller_of(request)
    body, _ = await read_json_object(request, _MAX_REPORT_BYTES)
    report = _validated(OutcomeReport, body, "outcome")
    sessions: SessionService = request.app.state.sessions
    result = await sessions.report_outcome(caller, session, report.success, report.reward)
    return json_response(orjson.dumps(result))


async def report_feedback(request: Request) -> Response:
    session: str = request.path_params["session"]
    caller = caller_of(request)
    body, _ = await read_json_object(request, _MAX_REPORT_BYTES, non_finite=True)
    report = _validated(FeedbackReport, body, "feedback")
    if (report.request_id is None) == (report.step is None):
        raise InvalidRequest(
            "Name the step by exactly one of 'request_id' (its x-request-id) and 'step' "
            "(its index in the session).",
            param="request_id",
        )
    step_ref = report.request_id if report.request_id is not None else report.step
    assert step_ref is not None
    feedback: FeedbackService = request.app.state.feedback
    result = await feedback.report(
        caller, session, step_ref, report.reward, _idempotency_key(request)
    )
    return json_response(orjson.dumps(result))


def _validated(model: type[Report], body: dict[str, Any], what: str) -> Report:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"Invalid {what}: {param}: {first['msg']}", param=param) from None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY_CHARS} characters.",
            param="Idempotency-Key",
        )
    return key


routes = [
    Route("/v1/sessions/{session}", describe_session, methods=["GET"]),
    Route("/v1/sessions/{session}/outcome", report_outcome, methods=["POST"]),
    Route("/v1/sessions/{session}/feedback", report_feedback, methods=["POST"]),
]
