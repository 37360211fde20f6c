"""Operator endpoints for helpers, behind the admin key (`server.admin_key_env` names its
variable). Tenants have their own module (server/routes/tenants.py)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.requests import Request

from router.policies import PolicyConfigError
from server.errors import Conflict
from server.routes.deps import admin_key
from server.service import ChatService

log = logging.getLogger("escalator.admin")

router = APIRouter(prefix="/admin", tags=["helpers"], dependencies=[Depends(admin_key)])


class HelpersReloaded(BaseModel):
    reloaded: Annotated[list[str], Field(description="'<route>: <policy id>' per route")]


class RouteHelpers(BaseModel):
    policy: str
    shadow_policy: str | None


class HelpersStatus(BaseModel):
    routes: dict[str, RouteHelpers]


@router.post(
    "/helpers/reload",
    summary="Re-read every route's helper artifacts",
    responses={409: {"description": "an artifact is invalid; the running helpers stay"}},
)
async def reload_helpers(request: Request) -> HelpersReloaded:
    service: ChatService = request.app.state.service
    try:
        loaded = service.reload_helpers()
    except PolicyConfigError as exc:
        log.error("helper reload refused, the running helpers stay: %s", exc)
        raise Conflict(
            f"Reload refused, the running helpers stay: {exc}", code="invalid_helper"
        ) from None
    log.info("helpers reloaded: %s", ", ".join(loaded))
    return HelpersReloaded(reloaded=loaded)


@router.get("/helpers", summary="The helpers each route runs")
async def helpers(request: Request) -> HelpersStatus:
    service: ChatService = request.app.state.service
    return HelpersStatus(
        routes={
            name: RouteHelpers(
                policy=plan.policy.policy_id,
                shadow_policy=plan.shadow.policy_id if plan.shadow else None,
            )
            for name, plan in service.routes.items()
        }
    )
