"""Tenants: an API key (stored as its sha256 digest) identifies the tenant."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from server.errors import AuthenticationFailed
from server.settings import KEY_DIGEST_PREFIX, Settings, TenantSettings

_RECENT_KEYS = 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the tenant a request's key belongs to."""

    tenant: str
    settings: TenantSettings


class Tenancy:
    def __init__(self, settings: Settings) -> None:
        self._by_digest: dict[str, Caller] = {}
        self._recent: dict[str, Caller] = {}
        for name, tenant in settings.tenants.items():
            for digest in tenant.api_keys:
                self._by_digest[digest.removeprefix(KEY_DIGEST_PREFIX)] = Caller(name, tenant)
        anonymous = settings.server.anonymous_tenant
        self._anonymous = Caller(anonymous, settings.tenants[anonymous]) if anonymous else None

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller named by an `Authorization: Bearer <key>` header."""
        if not authorization:
            if self._anonymous is not None:
                return self._anonymous
            raise AuthenticationFailed(
                "You didn't provide an API key: send it as 'Authorization: Bearer <key>'."
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed("The Authorization header must be 'Bearer <key>'.")
        caller = self._recent.get(key)
        if caller is None:
            # Config holds digests only; keys seen recently are remembered to skip the hash.
            caller = self._by_digest.get(hashlib.sha256(header_bytes(key)).hexdigest())
            if caller is not None:
                if len(self._recent) >= _RECENT_KEYS:
                    self._recent.clear()
                self._recent[key] = caller
        if caller is None:
            if self._anonymous is not None:
                return (
                    self._anonymous
                )  # local default: any key is accepted, as OpenAI SDKs need one
            raise AuthenticationFailed("Incorrect API key provided.")
        return caller


def header_bytes(value: str) -> bytes:
    """A header value's bytes as the client sent them. The ASGI server decodes headers as
    latin-1, so a key of UTF-8 text (hashed as UTF-8 in the configuration) is encoded back
    the same way; a str from elsewhere that latin-1 cannot hold is taken as UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()
