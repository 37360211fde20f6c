"""Tenants: an API key (known by its sha256 digest) identifies the tenant.

The keys and limits come from the tenant directory (server/tenants/directory.py), which
installs a new table whenever the tenant store changes; until it first does, the file's.
Looking a key up is a dict read: nothing on a step's path waits for the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from server.errors import AuthenticationFailed
from server.settings import KEY_DIGEST_PREFIX, Settings, TenantLimits

_RECENT_KEYS = 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the tenant a request's key belongs to."""

    tenant: str
    settings: TenantLimits


class Tenancy:
    def __init__(self, settings: Settings) -> None:
        self._anonymous_name = settings.server.anonymous_tenant
        self._anonymous: Caller | None = None
        self._by_digest: dict[str, Caller] = {}
        self._recent: dict[str, Caller] = {}
        self.install(
            (Caller(name, tenant), [d.removeprefix(KEY_DIGEST_PREFIX) for d in tenant.api_keys])
            for name, tenant in settings.tenants.items()
        )

    def install(self, tenants: Iterable[tuple[Caller, Iterable[str]]]) -> None:
        """Serve these tenants (each with its keys' hex digests) from now on, and no others."""
        by_digest: dict[str, Caller] = {}
        anonymous = None
        for caller, digests in tenants:
            for digest in digests:
                by_digest.setdefault(digest, caller)
            if caller.tenant == self._anonymous_name:
                anonymous = caller
        # Whole-table swaps: a request sees the old table or the new one, and a key
        # remembered from the old one is forgotten with it.
        self._by_digest, self._recent = by_digest, {}
        self._anonymous = anonymous or self._anonymous

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
