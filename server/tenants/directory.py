"""The tenant directory: tenants changed at runtime, seen by every replica within a second.

1. At start, the configuration file's tenants are written to the tenant store (marked
   `source: "file"`; the file's limits and keys win over runtime changes to them, and keys
   the API issued to them are kept), and file tenants no longer in the file are removed.
2. Every `POLL_S` each replica reads the store's version (one small read) and, when it
   moved, loads every tenant and installs a new key table in its `Tenancy`: a created
   tenant, a changed limit or a revoked key reaches every replica within POLL_S plus a load.
   The replica that made a change installs it before answering.
3. The same tick adds this replica's usage tally to the store's counts.

A store that fails leaves the last table in place (the proxy keeps serving the tenants it
knew) and is reported in the log; admin calls on it are 503 envelopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from router.budget import BudgetStore, tenant_day_key
from server.errors import Conflict, EscalatorError, NotFound, ServiceUnavailable
from server.metrics import Metrics
from server.settings import Settings, TenantLimits
from server.tenancy import Caller, Tenancy
from server.tenants.api import TenantUsage
from server.tenants.records import KeyRecord, TenantRecord, from_file, new_key, same_content
from server.tenants.store import TenantStore
from server.tenants.usage import USAGE_TTL_S, UsageTally

log = logging.getLogger("escalator.tenants")

POLL_S = 0.25
_REPORT_FAILURE_EVERY_S = 60.0
_CLOSE_GRACE_S = 2.0  # how long shutdown waits on a store call the poller is in
_SWAP_ATTEMPTS = 20  # concurrent writers to one tenant retry their compare-and-swap

Change = Callable[[TenantRecord | None], TenantRecord | None]
T = TypeVar("T")


class TenantDirectory:
    def __init__(
        self,
        settings: Settings,
        store: TenantStore,
        budgets: BudgetStore,
        tenancy: Tenancy,
        tally: UsageTally,
        metrics: Metrics | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.settings = settings
        self.store = store
        self.budgets = budgets
        self.tenancy = tenancy
        self.tally = tally
        self.metrics = metrics
        self.poll_s = poll_s
        self.records: dict[str, TenantRecord] = {}
        self._docs: dict[str, bytes] = {}  # the documents `records` were parsed from
        self._version: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._failure_reported_at = float("-inf")
        self._synced = False
        self._closing = False

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Sync and load, then poll. A store that is down at start does not stop the proxy:
        it serves the file's tenants, and the poll syncs once the store answers."""
        try:
            await self._sync()
            self._checked()
        except Exception as exc:  # the store's client raises its own error types
            self._report_failure(exc)
        self._poller = asyncio.create_task(self._poll(), name="tenant-directory")

    async def _sync(self) -> None:
        await self._sync_file_tenants()
        await self.refresh()
        self._synced = True

    async def close(self) -> None:
        self._closing = True
        if self._poller is not None:
            # A store client may swallow the cancellation of a call it was in (seen once as
            # a replica that polled on after SIGTERM): the loop also ends on `_closing`, and
            # shutdown never waits on it longer than one more poll.
            self._poller.cancel()
            await asyncio.wait({self._poller}, timeout=self.poll_s + _CLOSE_GRACE_S)
        with contextlib.suppress(Exception):
            await self.flush_usage()
        await self.store.close()

    async def _sync_file_tenants(self) -> None:
        now = time.time()
        for name, settings in self.settings.tenants.items():
            await self._change(name, functools.partial(from_file, name, settings, now=now))
        _, docs = await self.store.load()
        for name, doc in docs.items():
            if name not in self.settings.tenants and TenantRecord.load(doc).source == "file":
                log.warning("tenant %r is no longer in the configuration file: removed", name)
                await self._change(name, _removed_if_from_file)

    async def _poll(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_s)
            try:
                if not self._synced:
                    await self._sync()
                elif await self.store.version() != self._version:
                    await self.refresh()
                self._checked()
                await self.flush_usage()
            except Exception as exc:  # the store's client raises its own error types
                self._report_failure(exc)

    def _checked(self) -> None:
        if self.metrics is not None:
            self.metrics.tenants_checked.set(time.time())

    def _report_failure(self, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.tenant_store_errors.inc()
        now = time.monotonic()
        if now - self._failure_reported_at > _REPORT_FAILURE_EVERY_S:
            self._failure_reported_at = now
            log.warning("tenant store unavailable; serving the last tenants: %r", exc)

    async def refresh(self) -> None:
        """Load every tenant and serve exactly those. Only the documents that changed are
        parsed again: with many tenants, one change does not stall the event loop."""
        version, docs = await self.store.load()
        known = self._docs
        records = {
            name: self.records[name] if known.get(name) == doc else TenantRecord.load(doc)
            for name, doc in docs.items()
        }
        self.tenancy.install(
            (Caller(r.name, r.limits), [k.digest for k in r.keys]) for r in records.values()
        )
        self.records, self._docs, self._version = records, docs, version

    async def flush_usage(self) -> None:
        counts = self.tally.take()
        if not counts:
            return
        try:
            await self.store.add_usage(counts, USAGE_TTL_S)
        except BaseException:
            self.tally.give_back(counts)
            raise

    # -- the admin API's operations -----------------------------------------------------------

    async def list(self) -> list[TenantRecord]:
        """Every tenant as the store has it now (not as this replica last loaded it)."""
        _, docs = await _from_store(self.store.load())
        return [TenantRecord.load(docs[name]) for name in sorted(docs)]

    async def get(self, name: str) -> TenantRecord:
        doc = await _from_store(self.store.get(name))
        if doc is None:
            raise _no_tenant(name)
        return TenantRecord.load(doc)

    async def create(self, name: str, limits: TenantLimits) -> TenantRecord:
        def create(current: TenantRecord | None) -> TenantRecord:
            if current is not None:
                raise Conflict(f"Tenant '{name}' already exists.", code="tenant_exists")
            now = time.time()
            return TenantRecord(
                name=name, source="api", created_at=now, updated_at=now, limits=limits
            )

        return _present(await self._admin_change(name, create))

    async def update(self, name: str, changes: dict[str, Any]) -> TenantRecord:
        def update(current: TenantRecord | None) -> TenantRecord:
            record = _existing(name, current)
            limits = TenantLimits.model_validate({**record.limits.model_dump(), **changes})
            return record.model_copy(update={"limits": limits, "updated_at": time.time()})

        return _present(await self._admin_change(name, update))

    async def delete(self, name: str) -> None:
        if name == self.settings.server.anonymous_tenant:
            raise Conflict(
                f"Tenant '{name}' serves requests without a key (server.anonymous_tenant) "
                "and cannot be deleted.",
                code="tenant_in_use",
            )

        def delete(current: TenantRecord | None) -> None:
            _existing(name, current)
            return None

        await self._admin_change(name, delete)

    async def issue_key(self, name: str) -> tuple[str, KeyRecord]:
        key, record = new_key()

        def issue(current: TenantRecord | None) -> TenantRecord:
            tenant = _existing(name, current)
            keys = (*tenant.keys, record)
            return tenant.model_copy(update={"keys": keys, "updated_at": time.time()})

        await self._admin_change(name, issue)
        return key, record

    async def revoke_key(self, name: str, key_id: str) -> None:
        def revoke(current: TenantRecord | None) -> TenantRecord:
            tenant = _existing(name, current)
            keys = tuple(k for k in tenant.keys if k.id != key_id)
            if len(keys) == len(tenant.keys):
                raise NotFound(
                    f"Tenant '{name}' has no key '{key_id}'.", param="key_id", code="key_not_found"
                )
            return tenant.model_copy(update={"keys": keys, "updated_at": time.time()})

        await self._admin_change(name, revoke)

    async def usage(self, name: str, day: str) -> TenantUsage:
        """The tenant's figures for the day, this replica's latest steps included."""
        record = await self.get(name)
        await _from_store(self.flush_usage())
        counts = await _from_store(self.store.usage(name, day))
        cap = record.limits.interventions_per_day
        used = counts.units
        if cap is not None:  # the daily window's own count is what the cap is checked against
            used = await _from_store(self.budgets.used(tenant_day_key(name, day)))
        return TenantUsage(
            tenant=name,
            day=day,
            steps=counts.steps,
            escalated_steps=counts.escalated,
            escalation_rate=counts.escalated / counts.steps if counts.steps else None,
            target_escalation_rate=record.limits.target_escalation_rate,
            interventions_used=used,
            interventions_per_day=cap,
            interventions_left=None if cap is None else max(cap - used, 0),
        )

    async def _admin_change(self, name: str, change: Change) -> TenantRecord | None:
        """Apply `change` in the store, then serve the result here before answering."""
        record = await _from_store(self._change(name, change))
        await _from_store(self.refresh())
        return record

    async def _change(self, name: str, change: Change) -> TenantRecord | None:
        """Compare-and-swap `change(current)` into the store (None deletes), retrying when
        another writer got there first. `change` may raise to refuse."""
        for _ in range(_SWAP_ATTEMPTS):
            doc = await self.store.get(name)
            current = None if doc is None else TenantRecord.load(doc)
            new = change(current)
            if new is not None and current is not None and same_content(new, current):
                return current  # nothing to write: the version stays, nobody reloads
            if await self.store.swap(name, doc, None if new is None else new.dump()):
                return new
        raise ServiceUnavailable(f"tenant '{name}' is being changed by others; retry later")


async def _from_store(call: Awaitable[T]) -> T:
    """A tenant-store call on an admin route: a refusal passes through, a store that fails
    (Redis down, a broken file) is a 503 envelope; its detail stays in the log."""
    try:
        return await call
    except EscalatorError:
        raise
    except Exception:  # the store's client raises its own error types
        log.exception("tenant store call failed")
        raise ServiceUnavailable("the tenant store is unavailable; retry later") from None


def _removed_if_from_file(current: TenantRecord | None) -> TenantRecord | None:
    if current is not None and current.source != "file":
        return current  # taken over by the API meanwhile
    return None


def _existing(name: str, current: TenantRecord | None) -> TenantRecord:
    if current is None:
        raise _no_tenant(name)
    return current


def _present(record: TenantRecord | None) -> TenantRecord:
    assert record is not None
    return record


def _no_tenant(name: str) -> NotFound:
    return NotFound(f"No tenant '{name}'.", param="tenant", code="tenant_not_found")
