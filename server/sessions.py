"""Sessions seen from outside: the session a step names, its budget, and the outcome an agent
reports at the end."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from router.budget import BudgetStore, SessionInfo, session_key
from server.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from server.http import REQUEST_ID_PREFIX
from server.metrics import Metrics
from server.steplog import StepLog
from server.tenancy import Caller
from server.trace import outcome_record

log = logging.getLogger("escalator.sessions")
T = TypeVar("T")

MAX_SESSION_ID_CHARS = 512  # OpenAI's limit on a metadata value


def session_id_of(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """The session a step names: `X-Session-Id`, else `metadata.session_id`; 400 if bad.
    None: the step names none, and is a session of its own (one step)."""
    session: Any = headers.get("x-session-id")
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


async def from_store(call: Awaitable[T]) -> T:
    """A budget-store call on a control-plane route: a store that fails (Redis down, a
    broken file) is a 503 envelope, as on the chat path; its detail stays in the log."""
    try:
        return await call
    except Exception:  # the store's client raises its own error types
        log.exception("budget store call failed")
        raise ServiceUnavailable("the budget store is unavailable; retry later") from None


def ensure_room(steplog: StepLog, what: str) -> None:
    """Refuse a report the step log cannot take *before* anything is marked in the store,
    so the client's retry records it rather than being told it was already reported."""
    if not steplog.has_room():
        raise ServiceUnavailable(f"the step log is behind; retry the {what} later")


def submit_or_refuse(steplog: StepLog, record: dict[str, Any], what: str) -> None:
    """Queue a report's record; one that filled the log meanwhile is counted as dropped and
    refused."""
    if not steplog.submit(record):
        raise ServiceUnavailable(f"the step log is behind; the {what} was not recorded")


class SessionService:
    def __init__(
        self, store: BudgetStore, steplog: StepLog, metrics: Metrics, ttl_s: int, config_hash: str
    ) -> None:
        self.store = store
        self.steplog = steplog
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.config_hash = config_hash

    async def describe(self, caller: Caller, session: str) -> dict[str, Any]:
        info = await find_session(self.store, caller, session)
        limit = caller.settings.interventions_per_session
        return {
            "session": session,
            "tenant": caller.tenant,
            "steps": info.steps,
            "interventions_used": info.used,
            "interventions_left": max(limit - info.used, 0),
            "outcome_reported": info.outcome_reported,
        }

    async def report_outcome(
        self, caller: Caller, session: str, success: bool, reward: float | None
    ) -> dict[str, Any]:
        await find_session(self.store, caller, session)
        ensure_room(self.steplog, "outcome")
        key = session_key(caller.tenant, session)
        first = await from_store(self.store.mark_outcome(key, self.ttl_s))
        if not first:
            raise Conflict(
                f"The outcome of session '{session}' was already reported.",
                code="outcome_already_reported",
            )
        record = outcome_record(caller.tenant, session, success, reward, self.config_hash)
        submit_or_refuse(self.steplog, record, "outcome")
        self.metrics.outcomes.labels(caller.tenant, str(success).lower()).inc()
        return {"session": session, "success": success, "recorded": True}


async def find_session(store: BudgetStore, caller: Caller, session: str) -> SessionInfo:
    """The caller's session, or 404."""
    # Keys are per tenant: another tenant's session is indistinguishable from none.
    info = await from_store(store.session(session_key(caller.tenant, session)))
    if info is None:
        hint = (
            " A request sent without a session id keeps no session: send `x-session-id` with "
            "each step to report outcomes and feedback."
            if session.startswith(REQUEST_ID_PREFIX)
            else ""
        )
        raise NotFound(f"No session '{session}' for this API key.{hint}", code="session_not_found")
    return info
