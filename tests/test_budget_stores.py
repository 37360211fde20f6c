"""One contract suite for every budget store: memory, SQLite, Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from router.budget import (
    ONE_STEP_TTL_S,
    BudgetStore,
    BudgetStoreInUse,
    Scope,
    StepStart,
    open_store,
)
from tests.servers import RedisServer

StoreFactory = Callable[[], BudgetStore]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores of one kind. Redis gives a new client each time (as replicas have);
    memory and SQLite belong to one process, so opening again gives the same store."""
    kind = request.param
    redis_url = ""
    if kind == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        redis_url = redis.url
        await _flush(redis_url)
    opened: list[BudgetStore] = []

    def make() -> BudgetStore:
        if kind != "redis" and opened:
            return opened[0]
        store = open_store(kind, sqlite_path=tmp_path / "budget.db", redis_url=redis_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def _flush(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


def session(limit: int, key: str = "acme/s/ep-1", ttl_s: int = 3600) -> Scope:
    return Scope(key, limit, ttl_s)


async def test_steps_count_from_zero_per_session(make_store: StoreFactory) -> None:
    store = make_store()
    starts = [await store.begin_step("acme/s/a", 3600) for _ in range(3)]
    assert [s.step for s in starts] == [0, 1, 2]
    assert (await store.begin_step("acme/s/b", 3600)).step == 0
    info = await store.session("acme/s/a")
    assert info is not None and info.steps == 3 and info.used == 0


async def test_reserve_grants_up_to_the_limit_then_refuses(make_store: StoreFactory) -> None:
    store = make_store()
    scope = session(limit=3)
    granted = [await store.reserve([scope], 1) for _ in range(5)]
    assert [g is not None for g in granted] == [True, True, True, False, False]
    assert await store.used(scope.key) == 3


async def test_cost_greater_than_the_remaining_budget_is_refused(make_store: StoreFactory) -> None:
    store = make_store()
    scope = session(limit=3)
    assert await store.reserve([scope], 2) is not None
    assert await store.reserve([scope], 2) is None
    assert await store.used(scope.key) == 2
    assert await store.reserve([scope], 1) is not None


async def test_budget_zero_grants_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.reserve([session(limit=0)], 1) is None
    assert await store.used("acme/s/ep-1") == 0


async def test_reservation_takes_from_every_scope_or_none(make_store: StoreFactory) -> None:
    store = make_store()
    day = Scope("acme/day/2026-11-21", 2, 7200)
    first, second = session(5, "acme/s/a"), session(5, "acme/s/b")
    assert await store.reserve([first, day], 1) is not None
    assert await store.reserve([second, day], 1) is not None
    # The tenant's day is spent: the session still has budget but nothing may be taken.
    assert await store.reserve([second, day], 1) is None
    assert await store.used(second.key) == 1
    assert await store.used(day.key) == 2


async def test_refund_returns_exactly_the_reserved_units(make_store: StoreFactory) -> None:
    store = make_store()
    scope, day = session(limit=3), Scope("acme/day/d", 10, 7200)
    kept = await store.reserve([scope, day], 1)
    refunded = await store.reserve([scope, day], 2)
    assert kept is not None and refunded is not None
    await store.refund(refunded)
    assert await store.used(scope.key) == 1
    assert await store.used(day.key) == 1


async def test_refund_never_goes_below_zero(make_store: StoreFactory) -> None:
    store = make_store()
    scope = session(limit=3)
    reservation = await store.reserve([scope], 1)
    assert reservation is not None
    await store.refund(reservation)
    await store.refund(reservation)
    assert await store.used(scope.key) == 0


async def test_200_concurrent_reservations_on_one_session_grant_exactly_c(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    scope = session(limit=5)
    results = await asyncio.gather(*(store.reserve([scope], 1) for _ in range(200)))
    assert sum(r is not None for r in results) == 5
    assert await store.used(scope.key) == 5


async def test_two_store_clients_sharing_state_never_exceed_c(make_store: StoreFactory) -> None:
    """Two clients of one backing store (as two replicas have) race for one session."""
    first, second = make_store(), make_store()
    scope = session(limit=5)
    results = await asyncio.gather(
        *(store.reserve([scope], 1) for _ in range(100) for store in (first, second))
    )
    assert sum(r is not None for r in results) == 5
    assert await first.used(scope.key) == 5


async def test_outcome_is_marked_once(make_store: StoreFactory) -> None:
    store = make_store()
    await store.begin_step("acme/s/a", 3600)
    assert await store.mark_outcome("acme/s/a", 3600) is True
    assert await store.mark_outcome("acme/s/a", 3600) is False
    info = await store.session("acme/s/a")
    assert info is not None and info.outcome_reported


async def test_a_step_is_found_by_its_request_id_and_back(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(3):
        await store.begin_step("acme/s/a", 3600, f"req-{i}")
    await store.begin_step("acme/s/a", 3600)  # a step without a request id
    await store.begin_step("acme/s/b", 3600, "req-b0")
    other = make_store()  # another replica sees them
    assert [await other.step_of("acme/s/a", f"req-{i}") for i in range(3)] == [0, 1, 2]
    assert [await other.request_of("acme/s/a", i) for i in range(4)] == [
        "req-0",
        "req-1",
        "req-2",
        None,
    ]
    assert await other.step_of("acme/s/b", "req-b0") == 0
    assert await other.step_of("acme/s/b", "req-1") is None  # another session's request
    assert await other.step_of("globex/s/a", "req-1") is None  # another tenant's session
    assert await other.request_of("acme/s/a", 7) is None
    assert await other.step_of("acme/s/nobody", "req-0") is None
    info = await other.session("acme/s/a")
    assert info is not None and info.steps == 4


async def test_an_idempotency_key_is_claimed_once(make_store: StoreFactory) -> None:
    first, second = make_store(), make_store()
    await first.begin_step("acme/s/a", 3600, "req-0")
    await first.begin_step("acme/s/b", 3600, "req-1")
    assert await first.claim_key("acme/s/a", "k1", "0 0.5", 3600) is None
    assert await second.claim_key("acme/s/a", "k1", "0 0.9", 3600) == "0 0.5"
    assert await second.claim_key("acme/s/a", "k2", "0 0.9", 3600) is None
    assert await second.claim_key("acme/s/b", "k1", "0 0.1", 3600) is None  # per session
    # Claims are no steps and no request ids.
    info = await first.session("acme/s/a")
    assert info is not None and info.steps == 1
    assert await first.step_of("acme/s/a", "k1") is None


async def test_concurrent_claims_of_one_key_grant_it_once(make_store: StoreFactory) -> None:
    first, second = make_store(), make_store()
    await first.begin_step("acme/s/a", 3600, "req-0")
    claims = await asyncio.gather(
        *(
            store.claim_key("acme/s/a", "k", str(i), 3600)
            for i in range(50)
            for store in (first, second)
        )
    )
    winners = [c for c in claims if c is None]
    assert len(winners) == 1
    assert len(set(claims) - {None}) == 1  # every loser saw the winner's value


async def test_a_session_without_steps_does_not_exist(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.session("acme/s/nobody") is None
    await store.reserve([session(3, "acme/s/budget-only")], 1)
    assert await store.session("acme/s/budget-only") is None


async def test_keys_expire_after_their_ttl(make_store: StoreFactory) -> None:
    store = make_store()
    await store.begin_step("acme/s/short", 1, "req-old")
    assert await store.reserve([session(3, "acme/s/short", ttl_s=1)], 1) is not None
    assert await store.claim_key("acme/s/short", "k", "old", 1) is None
    await asyncio.sleep(2.1)
    assert await store.session("acme/s/short") is None
    assert await store.used("acme/s/short") == 0
    assert await store.step_of("acme/s/short", "req-old") is None
    # A new session of the same name starts clean: none of the old one's entries answer.
    assert (await store.begin_step("acme/s/short", 1, "req-new")).step == 0
    assert await store.request_of("acme/s/short", 0) == "req-new"
    assert await store.step_of("acme/s/short", "req-old") is None
    assert await store.claim_key("acme/s/short", "k", "new", 1) is None


async def test_ping(make_store: StoreFactory) -> None:
    assert await make_store().ping() is True


async def test_sqlite_budget_survives_a_restart(tmp_path: Path) -> None:
    store = open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    await store.begin_step("acme/s/a", 3600, "req-0")
    await store.reserve([session(3, "acme/s/a")], 2)
    await store.claim_key("acme/s/a", "k", "0 1.0", 3600)
    await store.close()
    reopened = open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    info = await reopened.session("acme/s/a")
    assert info is not None and (info.steps, info.used) == (1, 2)
    assert await reopened.step_of("acme/s/a", "req-0") == 0
    assert await reopened.claim_key("acme/s/a", "k", "0 2.0", 3600) == "0 1.0"
    assert (await reopened.begin_step("acme/s/a", 3600, "req-1")).step == 1
    assert await reopened.step_of("acme/s/a", "req-0") == 0  # from the file, beside new ones
    assert await reopened.step_of("acme/s/a", "req-1") == 1
    # A step's request id by its index is kept in memory only (see router/budget/sqlite.py).
    assert await reopened.request_of("acme/s/a", 1) == "req-1"
    assert await reopened.request_of("acme/s/a", 0) is None
    await reopened.close()


async def test_sqlite_entries_of_an_expired_session_stay_expired(tmp_path: Path) -> None:
    """Entries in the file outlive their session in memory until purged; a new session of
    the same name must not see them."""
    store = open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    await store.begin_step("acme/s/a", 1, "req-old")
    await store.close()
    await asyncio.sleep(1.1)
    reopened = open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    await reopened.begin_step("acme/s/a", 3600, "req-new")
    assert await reopened.step_of("acme/s/a", "req-old") is None
    assert await reopened.request_of("acme/s/a", 0) == "req-new"
    await reopened.close()


async def test_sqlite_store_belongs_to_one_process(tmp_path: Path) -> None:
    store = open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    with pytest.raises(BudgetStoreInUse, match="in use by another Escalator process"):
        open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    await store.close()
    again = open_store("sqlite", sqlite_path=tmp_path / "budget.db")
    await again.close()


_STEPS_THEN_CRASH = """
import asyncio, os, sys
from router.budget import Scope, open_store

async def main():
    store = open_store("sqlite", sqlite_path=sys.argv[1])
    for i in range(5):
        await store.begin_step("acme/s/a", 3600, f"req-{i}")
    await store.reserve([Scope("acme/s/a", 3, 3600)], 2)
    await store.mark_outcome("acme/s/a", 3600)
    await asyncio.sleep(float(sys.argv[2]))
    print("crashing", flush=True)
    os._exit(9)  # no close, no flush: as if killed

asyncio.run(main())
"""


def test_a_crashed_process_keeps_what_was_written_behind(tmp_path: Path) -> None:
    """Past the flush interval (10 ms) every change is in the file, even without a clean
    shutdown; and the next process may open the file the dead one held."""
    import subprocess
    import sys

    db = tmp_path / "budget.db"
    crashed = subprocess.run(
        [sys.executable, "-c", _STEPS_THEN_CRASH, str(db), "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == 9 and "crashing" in crashed.stdout, crashed.stderr

    async def check() -> None:
        store = open_store("sqlite", sqlite_path=db)
        info = await store.session("acme/s/a")
        assert info is not None and (info.steps, info.used, info.outcome_reported) == (5, 2, True)
        assert (await store.begin_step("acme/s/a", 3600)).step == 5
        assert await store.step_of("acme/s/a", "req-4") == 4
        await store.close()

    asyncio.run(check())


async def test_sqlite_keys_past_the_cache_are_read_back(tmp_path: Path) -> None:
    """With more sessions than fit in memory, evicted sessions come back from the file with
    their counts intact."""
    from router.budget.sqlite import SqliteBudgetStore

    store = SqliteBudgetStore(tmp_path / "budget.db", max_cached_keys=50, flush_interval_s=0.001)
    sessions = [f"acme/s/{i}" for i in range(400)]
    assert await store.reserve([session(3, sessions[0])], 1) is not None
    for n in range(30):  # 12,000 writes: past a sweep, so keys leave memory
        for i, key in enumerate(sessions):
            await store.begin_step(key, 3600, f"req-{i}-{n}")
            if i % 100 == 99:
                await asyncio.sleep(0.005)  # let the writes land: written keys may leave
    assert not store._complete  # keys left memory and were read back
    for key in sessions:
        info = await store.session(key)
        assert info is not None and info.steps == 30, key
    assert [await store.step_of(key, f"req-{i}-7") for i, key in enumerate(sessions)] == [7] * 400
    assert await store.used(sessions[0]) == 1
    assert await store.reserve([session(3, sessions[0])], 2) is not None
    assert await store.reserve([session(3, sessions[0])], 1) is None
    await store.close()

    reopened = SqliteBudgetStore(tmp_path / "budget.db", max_cached_keys=50)
    assert (await reopened.begin_step(sessions[-1], 3600)).step == 30
    assert await reopened.used(sessions[0]) == 3
    await reopened.close()


async def test_sqlite_store_keeps_changes_while_the_file_fails_and_is_not_ready(
    tmp_path: Path,
) -> None:
    """Writes that fail are retried: the counters stay right in memory, the store reports
    not ready (so /readyz does), and once the file takes writes again nothing was lost."""
    import sqlite3

    from router.budget.sqlite import SqliteBudgetStore, _connect

    store = SqliteBudgetStore(tmp_path / "budget.db", flush_interval_s=0.001)
    store._conn.close()  # the file stops taking writes
    for _ in range(3):
        await store.begin_step("acme/s/a", 3600)
    await asyncio.sleep(0.05)
    assert await store.ping() is False
    assert (await store.begin_step("acme/s/a", 3600)).step == 3

    store._conn = _connect(tmp_path / "budget.db")  # the disk recovers
    await asyncio.sleep(0.05)
    assert await store.ping() is True
    with sqlite3.connect(tmp_path / "budget.db") as reader:
        row = reader.execute("SELECT steps FROM counters WHERE key = 'acme/s/a'").fetchone()
    assert row == (4,)
    await store.close()


def _used_in_file(path: Path, key: str) -> int | None:
    import sqlite3

    with sqlite3.connect(path) as reader:
        row = reader.execute("SELECT used FROM counters WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


async def test_sqlite_reservation_is_in_the_file_when_reserve_returns(tmp_path: Path) -> None:
    """An intervention is sent on a reservation as soon as it is granted: a crash right
    after must not forget it, so it is written before `reserve` returns (a group commit
    for the many granted at once), not behind."""
    from router.budget.sqlite import SqliteBudgetStore

    store = SqliteBudgetStore(tmp_path / "budget.db", flush_interval_s=60)
    day = Scope("acme/day/d", 1000, 7200)
    assert await store.reserve([session(3), day], 1) is not None
    assert _used_in_file(tmp_path / "budget.db", "acme/s/ep-1") == 1
    granted = await asyncio.gather(
        *(store.reserve([session(1, f"acme/s/{i}"), day], 1) for i in range(50))
    )
    assert all(granted)
    assert [_used_in_file(tmp_path / "budget.db", f"acme/s/{i}") for i in range(50)] == [1] * 50
    assert _used_in_file(tmp_path / "budget.db", "acme/day/d") == 51
    await store.close()


async def test_sqlite_reservation_the_file_cannot_take_is_refused_and_undone(
    tmp_path: Path,
) -> None:
    from router.budget.sqlite import ReservationNotWritten, SqliteBudgetStore, _connect

    store = SqliteBudgetStore(tmp_path / "budget.db", flush_interval_s=0.001)
    store._conn.close()  # the file stops taking writes
    with pytest.raises(ReservationNotWritten):
        await store.reserve([session(3)], 1)
    assert await store.used("acme/s/ep-1") == 0
    store._conn = _connect(tmp_path / "budget.db")  # the disk recovers
    assert await store.reserve([session(3)], 1) is not None
    assert _used_in_file(tmp_path / "budget.db", "acme/s/ep-1") == 1
    await store.close()


async def test_sqlite_reservation_cancelled_while_written_is_undone(tmp_path: Path) -> None:
    """A step cancelled (its client gone) while its reservation is being written never
    gets the reservation, so the store returns its units."""
    from router.budget.sqlite import SqliteBudgetStore

    store = SqliteBudgetStore(tmp_path / "budget.db")
    reserving = asyncio.ensure_future(store.reserve([session(3)], 1))
    await asyncio.sleep(0)  # granted in memory, waiting for the file
    reserving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reserving
    assert await store.used("acme/s/ep-1") == 0
    await store.close()
    assert _used_in_file(tmp_path / "budget.db", "acme/s/ep-1") == 0


async def kept_keys(store: BudgetStore) -> set[str]:
    """The keys a store holds, in the store's own names."""
    from router.budget.memory import MemoryBudgetStore
    from router.budget.redis_store import RedisBudgetStore

    if isinstance(store, MemoryBudgetStore):  # the SQLite store's memory too
        return set(store._keys)
    assert isinstance(store, RedisBudgetStore)
    names = [name.decode() async for name in store._redis.scan_iter("escalator:*")]
    return {name.replace("escalator:{acme}:", "acme/") for name in names}


async def test_a_one_step_session_is_never_stored(make_store: StoreFactory) -> None:
    """A request without a session id is a session of one step: its count would expire as
    it is written (`ONE_STEP_TTL_S`), so no store keeps it; only the tenant's day counts."""
    store = make_store()
    key, day = "acme/s/req_one", Scope("acme/day/d", 2, 7200)
    one_step = Scope(key, 2, ONE_STEP_TTL_S)
    assert await store.begin_step(key, ONE_STEP_TTL_S) == StepStart(0, 0)
    assert await store.begin_step(key, ONE_STEP_TTL_S) == StepStart(0, 0)
    assert await store.reserve([one_step, day], 3) is None  # more than the session's C
    first = await store.reserve([one_step, day], 1)
    second = await store.reserve([one_step, day], 1)
    assert first is not None and second is not None
    assert await kept_keys(store) == {"acme/day/d"}
    assert await store.reserve([one_step, day], 1) is None  # the tenant's day is spent
    assert await store.session(key) is None and await store.used(key) == 0
    await store.refund(second)
    assert await store.used("acme/day/d") == 1
    alone = await store.reserve([one_step], 2)  # no tenant window: nothing counts at all
    assert alone is not None
    await store.refund(alone)
    assert await kept_keys(store) == {"acme/day/d"}
