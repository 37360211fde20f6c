"""A tenant as the tenant store keeps it: its limits, where it came from, its keys' digests.

One JSON document per tenant, so a tenant and its keys change together, in one
compare-and-swap (server/tenants/store.py). A key itself is never stored: only its sha256
digest, an id to name it by and, for a key the API issued, the first characters the client
sees (so an operator can tell keys apart).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.settings import KEY_DIGEST_PREFIX, TenantLimits, TenantSettings

Source = Literal["file", "api"]
TENANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
KEY_PREFIX = "sk-esc-"
_SHOWN_CHARS = len(KEY_PREFIX) + 4
_TENANT_NAME = re.compile(TENANT_NAME)


class KeyRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    digest: Annotated[str, Field(description="sha256 of the key, hex; never shown")]
    prefix: str | None = None  # a file key's characters are unknown
    created_at: float
    source: Source


class TenantRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: Source
    created_at: float
    updated_at: float
    limits: TenantLimits
    keys: tuple[KeyRecord, ...] = ()

    def dump(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def load(cls, doc: bytes) -> TenantRecord:
        return cls.model_validate_json(doc)


def valid_name(name: str) -> bool:
    return _TENANT_NAME.match(name) is not None


def new_key() -> tuple[str, KeyRecord]:
    """A fresh API key and its record (the key itself is returned once, never stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(
        id=f"key_{secrets.token_hex(8)}",
        digest=hashlib.sha256(key.encode()).hexdigest(),
        prefix=key[:_SHOWN_CHARS],
        created_at=time.time(),
        source="api",
    )
    return key, record


def from_file(
    name: str, settings: TenantSettings, current: TenantRecord | None, *, now: float
) -> TenantRecord:
    """The record of a tenant in the configuration file: the file's limits and keys, and
    the keys the API issued to it since (a file key revoked through the API comes back)."""
    limits = TenantLimits.model_validate(settings.model_dump(exclude={"api_keys"}))
    file_keys = [_file_key(digest, current, now) for digest in dict.fromkeys(settings.api_keys)]
    issued = [k for k in current.keys if k.source == "api"] if current else []
    return TenantRecord(
        name=name,
        source="file",
        created_at=current.created_at if current else now,
        updated_at=now,
        limits=limits,
        keys=(*file_keys, *issued),
    )


def _file_key(digest: str, current: TenantRecord | None, now: float) -> KeyRecord:
    hexdigest = digest.removeprefix(KEY_DIGEST_PREFIX)
    known = next((k for k in current.keys if k.digest == hexdigest), None) if current else None
    created = known.created_at if known else now
    return KeyRecord(
        id=f"file_{hexdigest[:12]}", digest=hexdigest, created_at=created, source="file"
    )


def same_content(a: TenantRecord, b: TenantRecord) -> bool:
    """Whether two records differ only in their update time."""
    return a.model_copy(update={"updated_at": 0.0}) == b.model_copy(update={"updated_at": 0.0})
