"""The admin API for tenants: create, read, change and delete them, issue and revoke their
keys, read their usage. Behind the admin key; every replica sees a change within a second
(server/tenants/directory.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.requests import Request

from server.routes.deps import admin_key, body_doc, json_body
from server.settings import TenantLimits
from server.tenants.api import (
    Deleted,
    IssuedKey,
    KeyList,
    KeyView,
    TenantCreate,
    TenantList,
    TenantUpdate,
    TenantUsage,
    TenantView,
    changes_of,
)
from server.tenants.directory import TenantDirectory
from server.tenants.usage import today

_MAX_ADMIN_BODY_BYTES = 64 * 1024
_DAY = r"^\d{4}-\d{2}-\d{2}$"

router = APIRouter(prefix="/admin/tenants", tags=["tenants"], dependencies=[Depends(admin_key)])
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such tenant (or key)"}}


async def _directory(request: Request) -> TenantDirectory:
    directory: TenantDirectory = request.app.state.tenants
    return directory


Directory = Annotated[TenantDirectory, Depends(_directory)]


@router.get("", summary="Every tenant")
async def list_tenants(directory: Directory) -> TenantList:
    return TenantList(data=[TenantView.of(r) for r in await directory.list()])


@router.post(
    "",
    status_code=201,
    summary="Create a tenant (no key yet: issue one with POST .../keys)",
    responses={409: {"description": "a tenant of that name exists"}},
    openapi_extra=body_doc(TenantCreate),
)
async def create_tenant(
    directory: Directory,
    tenant: Annotated[TenantCreate, json_body(TenantCreate, "tenant", _MAX_ADMIN_BODY_BYTES)],
) -> TenantView:
    limits = TenantLimits.model_validate(tenant.model_dump(exclude={"name"}))
    return TenantView.of(await directory.create(tenant.name, limits))


@router.get("/{tenant}", summary="A tenant, its limits and its keys", responses=_NOT_FOUND)
async def get_tenant(directory: Directory, tenant: str) -> TenantView:
    return TenantView.of(await directory.get(tenant))


@router.patch(
    "/{tenant}",
    summary="Change a tenant's limits (null removes a daily cap or a target rate)",
    responses=_NOT_FOUND,
    openapi_extra=body_doc(TenantUpdate),
)
async def update_tenant(
    directory: Directory,
    tenant: str,
    update: Annotated[BaseModel, json_body(TenantUpdate, "update", _MAX_ADMIN_BODY_BYTES)],
) -> TenantView:
    return TenantView.of(await directory.update(tenant, changes_of(update)))


@router.delete("/{tenant}", summary="Delete a tenant and its keys", responses=_NOT_FOUND)
async def delete_tenant(directory: Directory, tenant: str) -> Deleted:
    await directory.delete(tenant)
    return Deleted(id=tenant, object="tenant")


@router.get("/{tenant}/keys", summary="A tenant's keys (never the keys themselves)")
async def list_keys(directory: Directory, tenant: str) -> KeyList:
    record = await directory.get(tenant)
    return KeyList(data=[KeyView.of(k) for k in record.keys])


@router.post(
    "/{tenant}/keys",
    status_code=201,
    summary="Issue a key: shown in this answer only",
    responses=_NOT_FOUND,
)
async def issue_key(directory: Directory, tenant: str) -> IssuedKey:
    key, record = await directory.issue_key(tenant)
    return IssuedKey(**KeyView.of(record).model_dump(), tenant=tenant, key=key)


@router.delete(
    "/{tenant}/keys/{key_id}",
    summary="Revoke a key (refused on every replica within a second)",
    responses=_NOT_FOUND,
)
async def revoke_key(directory: Directory, tenant: str, key_id: str) -> Deleted:
    await directory.revoke_key(tenant, key_id)
    return Deleted(id=key_id, object="key")


@router.get(
    "/{tenant}/usage",
    summary="A tenant's steps, escalations and interventions for a UTC day",
    responses=_NOT_FOUND,
)
async def tenant_usage(
    directory: Directory,
    tenant: str,
    day: Annotated[str | None, Query(pattern=_DAY, description="YYYY-MM-DD; today")] = None,
) -> TenantUsage:
    return await directory.usage(tenant, day or today())
