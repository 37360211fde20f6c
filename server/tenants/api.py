"""The admin API's tenant models: what a request may send and what it gets back.

Requests refuse unknown fields (a misspelt limit is a 400, not a silent no-op). A key's
digest never leaves the store; the key itself is in `IssuedKey`, the answer to issuing it,
and nowhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from server.settings import TenantLimits
from server.tenants.records import TENANT_NAME, KeyRecord, Source, TenantRecord

TenantName = Annotated[str, Field(pattern=TENANT_NAME, description="letters, digits, _ . -")]


class _AdminRequest(BaseModel):
    """Strict types (no "3" for 3, no 1 for true), unknown fields refused. JSON does not tell
    2 from 2.0, so a whole number is taken where an integer is wanted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            k: int(v) if k in _INTEGERS and isinstance(v, float) and v.is_integer() else v
            for k, v in data.items()
        }


_INTEGERS = {
    name
    for name, field in TenantLimits.model_fields.items()
    if int in (field.annotation, *get_args(field.annotation))
    or any(int in get_args(a) for a in get_args(field.annotation))
}


class TenantCreate(TenantLimits, _AdminRequest):
    """A new tenant: its name and limits (those left out take their defaults)."""

    name: TenantName


def _optional(field: FieldInfo) -> FieldInfo:
    return FieldInfo.merge_field_infos(field, default=None)


# Every limit, each optional: the fields sent are changed, the rest kept. A limit that may be
# null (interventions_per_day, target_escalation_rate) is removed by sending null.
_LIMITS: dict[str, Any] = {
    name: (field.annotation, _optional(field)) for name, field in TenantLimits.model_fields.items()
}
TenantUpdate: type[BaseModel] = create_model(
    "TenantUpdate",
    __base__=_AdminRequest,
    __doc__="Limits to change; fields left out stay as they are.",
    **_LIMITS,
)


def changes_of(update: BaseModel) -> dict[str, Any]:
    """The fields an update sent (a null sent is a change; a field left out is not)."""
    return update.model_dump(include=update.model_fields_set)


class KeyView(BaseModel):
    id: str
    prefix: Annotated[
        str | None, Field(description="the key's first characters; null for a file key")
    ]
    created_at: float
    source: Source

    @classmethod
    def of(cls, key: KeyRecord) -> KeyView:
        return cls(id=key.id, prefix=key.prefix, created_at=key.created_at, source=key.source)


class IssuedKey(KeyView):
    """A new key: `key` is shown here once and never again (the store keeps its sha256)."""

    tenant: str
    key: str


class TenantView(TenantLimits):
    name: str
    source: Annotated[
        Source, Field(description="file: from the configuration file (re-applied at start)")
    ]
    created_at: float
    updated_at: float
    keys: list[KeyView]

    @classmethod
    def of(cls, record: TenantRecord) -> TenantView:
        return cls(
            **record.limits.model_dump(),
            name=record.name,
            source=record.source,
            created_at=record.created_at,
            updated_at=record.updated_at,
            keys=[KeyView.of(k) for k in record.keys],
        )


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantView]


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


class TenantUsage(BaseModel):
    """A tenant's figures for one UTC day, over every replica (steps counted on routes)."""

    tenant: str
    day: str
    steps: int
    escalated_steps: int
    escalation_rate: float | None
    target_escalation_rate: float | None
    interventions_used: Annotated[int, Field(description="budget units")]
    interventions_per_day: int | None
    interventions_left: Annotated[int | None, Field(description="null without a daily cap")]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: Literal[True] = True
