"""Operator endpoints, behind the admin key (`server.admin_key_env` names its variable)."""

from __future__ import annotations

import hmac
import logging
import os

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.policies import PolicyConfigError
from server.errors import AuthenticationFailed, Conflict, NotFound
from server.http import json_response
from server.service import ChatService
from server.tenancy import header_bytes

log = logging.getLogger("escalator.admin")


def check_admin(request: Request) -> None:
    variable = request.app.state.settings.server.admin_key_env
    expected = os.environ.get(variable) if variable else None
    if not expected:
        raise NotFound("The admin API is off: set server.admin_key_env and that variable.")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthenticationFailed("The Authorization header must be 'Bearer <admin key>'.")
    if not hmac.compare_digest(header_bytes(given.strip()), expected.encode()):
        raise AuthenticationFailed("Incorrect admin key.")


async def reload_helpers(request: Request) -> Response:
    check_admin(request)
    service: ChatService = request.app.state.service
    try:
        loaded = service.reload_helpers()
    except PolicyConfigError as exc:
        log.error("helper reload refused, the running helpers stay: %s", exc)
        raise Conflict(
            f"Reload refused, the running helpers stay: {exc}", code="invalid_helper"
        ) from None
    log.info("helpers reloaded: %s", ", ".join(loaded))
    return json_response(orjson.dumps({"reloaded": loaded}))


routes = [Route("/admin/helpers/reload", reload_helpers, methods=["POST"])]
