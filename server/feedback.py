"""Step feedback: a reward the environment reports for one step of a session.

A report names its step by the request id the proxy answered it with (`x-request-id`) or
by its index. Rewards for one step add up: every accepted report is one `feedback` record
in the step log, and training sums them. A report with an `Idempotency-Key` the session has
seen is answered again without a second record, so a client may retry freely; the keys
live in the budget store with the session (every replica sees them) and expire with it.
"""

from __future__ import annotations

from typing import Any

from router.budget import BudgetStore, SessionInfo, session_key
from server.errors import Conflict, NotFound
from server.metrics import Metrics
from server.sessions import ensure_room, find_session, from_store, submit_or_refuse
from server.steplog import StepLog
from server.tenancy import Caller
from server.trace import feedback_record


class FeedbackService:
    def __init__(
        self, store: BudgetStore, steplog: StepLog, metrics: Metrics, ttl_s: int, config_hash: str
    ) -> None:
        self.store = store
        self.steplog = steplog
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.config_hash = config_hash

    async def report(
        self,
        caller: Caller,
        session: str,
        step_ref: str | int,
        reward: float,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Record `reward` for the step `step_ref` (a request id, or a step index)."""
        info = await find_session(self.store, caller, session)
        key = session_key(caller.tenant, session)
        request_id: str | None
        if isinstance(step_ref, str):
            step, request_id = await self._step_of(key, session, step_ref), step_ref
        else:
            step, request_id = step_ref, await self._request_of(key, session, info, step_ref)
        answer = {"session": session, "step": step, "request_id": request_id, "reward": reward}
        ensure_room(self.steplog, "report")
        if idempotency_key is not None:
            report = f"{step} {reward!r}"
            claimed = await from_store(
                self.store.claim_key(key, idempotency_key, report, self.ttl_s)
            )
            if claimed is not None:
                if claimed != report:
                    raise Conflict(
                        "This Idempotency-Key was used for another report in this session.",
                        param="Idempotency-Key",
                        code="idempotency_key_reused",
                    )
                return {**answer, "recorded": False, "duplicate": True}
        record = feedback_record(caller.tenant, session, step, request_id, reward, self.config_hash)
        # Filled up while the key was claimed (counted as a drop): the key stays claimed, so
        # a retry is answered as a duplicate and this report is lost. The store has no way
        # to release a key yet.
        submit_or_refuse(self.steplog, record, "report")
        self.metrics.feedback.labels(caller.tenant).inc()
        return {**answer, "recorded": True, "duplicate": False}

    async def _step_of(self, key: str, session: str, request_id: str) -> int:
        step = await from_store(self.store.step_of(key, request_id))
        if step is None:
            raise NotFound(
                f"Session '{session}' has no step answered as request '{request_id}'.",
                param="request_id",
                code="step_not_found",
            )
        return step

    async def _request_of(self, key: str, session: str, info: SessionInfo, step: int) -> str | None:
        if not 0 <= step < info.steps:
            raise NotFound(
                f"Session '{session}' has no step {step}: it has {info.steps} "
                f"(steps count from 0).",
                param="step",
                code="step_not_found",
            )
        return await from_store(self.store.request_of(key, step))
