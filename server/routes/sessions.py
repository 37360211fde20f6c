"""Session endpoints: budget state, the episode's outcome (the training label), and step
feedback (a reward for one step). The tenant's own API key; another tenant's session is a
404, as one that does not exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
)
from starlette.requests import Request

from server.errors import InvalidRequest
from server.feedback import FeedbackService
from server.routes.deps import body_doc, json_body, tenant_caller
from server.sessions import SessionService
from server.tenancy import Caller

_MAX_REPORT_BYTES = 64 * 1024
_MAX_IDEMPOTENCY_KEY_CHARS = 255

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
TenantCaller = Annotated[Caller, Depends(tenant_caller)]


class OutcomeReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    success: StrictBool
    reward: float | None = None


class FeedbackReport(BaseModel):
    """A reward for one step, named by exactly one of `request_id` and `step`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={  # for OpenAPI; the handler checks it with its own message
            "oneOf": [
                {"required": ["request_id"], "properties": {"request_id": {"type": "string"}}},
                {"required": ["step"], "properties": {"step": {"type": "integer"}}},
            ]
        },
    )

    request_id: Annotated[StrictStr, Field(min_length=1)] | None = None
    step: StrictInt | None = None
    reward: Annotated[float, Strict(), AllowInfNan(False)]


class SessionState(BaseModel):
    session: str
    tenant: str
    steps: int
    interventions_used: int
    interventions_left: int
    outcome_reported: bool


class OutcomeRecorded(BaseModel):
    session: str
    success: bool
    recorded: bool


class FeedbackRecorded(BaseModel):
    session: str
    step: int
    request_id: str | None
    reward: float
    recorded: bool
    duplicate: Annotated[bool, Field(description="a retry of a report already taken")]


@router.get("/{session}", summary="A session's steps and budget")
async def describe_session(request: Request, session: str, caller: TenantCaller) -> SessionState:
    sessions: SessionService = request.app.state.sessions
    return SessionState.model_validate(await sessions.describe(caller, session))


@router.post(
    "/{session}/outcome",
    summary="Report the episode's outcome (once)",
    responses={409: {"description": "the outcome was already reported"}},
    openapi_extra=body_doc(OutcomeReport),
)
async def report_outcome(
    request: Request,
    session: str,
    caller: TenantCaller,
    report: Annotated[OutcomeReport, json_body(OutcomeReport, "outcome", _MAX_REPORT_BYTES)],
) -> OutcomeRecorded:
    sessions: SessionService = request.app.state.sessions
    result = await sessions.report_outcome(caller, session, report.success, report.reward)
    return OutcomeRecorded.model_validate(result)


@router.post(
    "/{session}/feedback",
    summary="Report a reward for one step",
    responses={409: {"description": "the Idempotency-Key was used for another report"}},
    openapi_extra=body_doc(FeedbackReport),
)
async def report_feedback(
    request: Request,
    session: str,
    caller: TenantCaller,
    report: Annotated[
        FeedbackReport,
        json_body(FeedbackReport, "feedback", _MAX_REPORT_BYTES, non_finite=True),
    ],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="makes a retry harmless (1-255 chars)"),
    ] = None,
) -> FeedbackRecorded:
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
        caller, session, step_ref, report.reward, _checked(idempotency_key)
    )
    return FeedbackRecorded.model_validate(result)


def _checked(idempotency_key: str | None) -> str | None:
    key = idempotency_key
    if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY_CHARS} characters.",
            param="Idempotency-Key",
        )
    return key
