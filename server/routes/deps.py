"""What the control-plane routes (FastAPI) share: who is asking, and request bodies.

A body is read by the proxy's own reader, as the hot path reads one: the size limit is
checked before reading (413), the body must arrive in time (408) and be one JSON object;
then its pydantic model validates it (400 naming the field). `body_doc` gives OpenAPI the
model's schema, since FastAPI does not parse these bodies itself.
"""

from __future__ import annotations

import hmac
import os
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from server.errors import AuthenticationFailed, InvalidRequest, NotFound
from server.http import caller_of, read_json_object
from server.tenancy import Caller, header_bytes

Model = TypeVar("Model", bound=BaseModel)

# For OpenAPI only (auto_error off): the checks below read the header themselves.
_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminKey", description="the key in server.admin_key_env"
)
_tenant_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey")


async def admin_key(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    """The request carries the admin key (401 otherwise; 404 while the admin API is off)."""
    variable = request.app.state.settings.server.admin_key_env
    expected = os.environ.get(variable) if variable else None
    if not expected:
        raise NotFound("The admin API is off: set server.admin_key_env and that variable.")
    scheme, _sep, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthenticationFailed("The Authorization header must be 'Bearer <admin key>'.")
    if not hmac.compare_digest(header_bytes(given.strip()), expected.encode()):
        raise AuthenticationFailed("Incorrect admin key.")


async def tenant_caller(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_tenant_bearer)],
) -> Caller:
    """The tenant whose API key the request carries (401 otherwise)."""
    return caller_of(request)


def json_body(model: type[Model], what: str, max_bytes: int, *, non_finite: bool = False) -> Any:
    """A dependency giving the request body as `model` (see the module's docstring)."""

    async def read(request: Request) -> Model:
        body, _ = await read_json_object(request, max_bytes, non_finite=non_finite)
        return validated(model, body, what)

    return Depends(read)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route whose body `json_body` reads."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


def validated(model: type[Model], body: dict[str, Any], what: str) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"Invalid {what}: {param}: {first['msg']}", param=param) from None
