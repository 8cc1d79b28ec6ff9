"""storekit.aio through a real PgBouncer in transaction pooling mode.

The test PgBouncer keeps 2 server connections per database, so many tasks share them:
each transaction (each autocommit statement) may land on another server connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from storekit import (
    BusyError,
    CapabilityError,
    IntegrityError,
    PoolOptions,
    StoreError,
    aio,
)
from storekit.testing import PgBouncer
from storekit.url import DatabaseURL

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]
HANG = 60.0  # a guard against hanging only
POOLED = PoolOptions(pooler="transaction", max_size=8)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def url(storekit_pgbouncer_url: str) -> str:
    return storekit_pgbouncer_url


@pytest.fixture
def direct(storekit_pgbouncer: PgBouncer, url: str) -> str:
    return storekit_pgbouncer.direct_url_for(DatabaseURL.parse(url).database)


@pytest.fixture
async def db(url: str) -> AsyncIterator[aio.AsyncDatabase]:
    database = await aio.create_database(url, pool=POOLED)
    await database.exec("CREATE TABLE t (id serial PRIMARY KEY, k text UNIQUE,"
                        " n int NOT NULL DEFAULT 0, doc jsonb)")
    yield database
    await database.close()


async def _tasks(n: int, fn: Any) -> None:
    await asyncio.wait_for(asyncio.gather(*(fn(i) for i in range(n))), HANG)


async def test_opens_behind_the_pooler_and_says_so(db: aio.AsyncDatabase) -> None:
    assert db.settings["pooler"] == "transaction"
    assert db.capabilities.row_level_security is False


async def test_repeated_statements_from_many_tasks(db: aio.AsyncDatabase) -> None:
    # psycopg would prepare a statement after 5 uses; through the pooler the next use
    # lands on another server connection, without it or with another client's.
    async def work(i: int) -> None:
        for j in range(12):
            key = f"{i}-{j}"
            rid = (await db.run("INSERT INTO t (k, doc) VALUES (?, ?) RETURNING id",
                                (key, {"i": i, "j": j}))).last_id
            assert await db.get("SELECT k, doc FROM t WHERE id = ?", (rid,)) == {
                "k": key, "doc": {"i": i, "j": j}}
            assert await db.get("SELECT ?::int + 1 AS x", (j,)) == {"x": j + 1}
            assert len(await db.all("SELECT id FROM t WHERE k LIKE ?", (f"{i}-%",))) == j + 1

    await _tasks(6, work)
    assert await db.get("SELECT count(*) AS c FROM t") == {"c": 72}
    assert [r["k"] async for r in db.iter("SELECT k FROM t WHERE k LIKE '0-%' ORDER BY id")
            ] == [f"0-{j}" for j in range(12)]


async def test_atomic_from_many_tasks_loses_no_update(db: aio.AsyncDatabase) -> None:
    await db.run("INSERT INTO t (k, n) VALUES ('c', 0)")

    async def bump(tx: aio.AsyncTransaction) -> None:
        row = await tx.get("SELECT n FROM t WHERE k = 'c'")
        assert row is not None
        await tx.run("UPDATE t SET n = ? WHERE k = 'c'", (row["n"] + 1,))

    async def work(i: int) -> None:
        for _ in range(8):
            await db.atomic(bump, retries=1000)

    await _tasks(8, work)
    assert await db.get("SELECT n FROM t WHERE k = 'c'") == {"n": 64}


async def test_transactions_and_savepoints(db: aio.AsyncDatabase) -> None:
    async with db.transaction() as tx:
        await tx.run("INSERT INTO t (k) VALUES ('a')")
        with pytest.raises(IntegrityError):
            async with db.transaction() as inner:
                await inner.run("INSERT INTO t (k) VALUES ('b')")
                await inner.run("INSERT INTO t (k) VALUES ('a')")
        await tx.run("INSERT INTO t (k) VALUES ('c')")
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.run("INSERT INTO t (k) VALUES ('d')")
            raise RuntimeError
    assert [r["k"] for r in await db.all("SELECT k FROM t ORDER BY k")] == ["a", "c"]


def _poison_lock_timeout(url: str) -> psycopg.Connection[Any]:
    """A client that sets lock_timeout=0 (wait forever) for its whole session: through the
    pooler, that setting stays on a shared server connection."""
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    conn.execute("SET lock_timeout = 0")
    return conn


@pytest.mark.parametrize("in_transaction", [False, True])
async def test_lock_timeout_is_honoured_whatever_the_server_connection(
        url: str, db: aio.AsyncDatabase, in_transaction: bool) -> None:
    await db.run("INSERT INTO t (k) VALUES ('row')")
    waiter = await aio.create_database(
        url, pool=PoolOptions(pooler="transaction", busy_timeout_ms=200))
    try:
        async with db.transaction() as holder:  # one of the two server connections
            await holder.run("UPDATE t SET n = 1 WHERE k = 'row'")
            poisoned = await asyncio.to_thread(_poison_lock_timeout, url)  # the other one
            try:
                with pytest.raises(BusyError) as info:
                    if in_transaction:
                        async with waiter.transaction() as tx:
                            await asyncio.wait_for(
                                tx.run("UPDATE t SET n = 2 WHERE k = 'row'"), HANG)
                    else:
                        await asyncio.wait_for(
                            waiter.run("UPDATE t SET n = 2 WHERE k = 'row'"), HANG)
            finally:
                poisoned.close()
        assert isinstance(info.value.__cause__, psycopg.Error)
    finally:
        await waiter.close()


async def test_session_state_is_neither_set_nor_reset(db: aio.AsyncDatabase, url: str,
                                                      direct: str) -> None:
    # Many statements through 2 shared server connections: none of ours changed a
    # session setting there (lock_timeout is SET LOCAL, gone at each COMMIT).
    for _ in range(6):
        await db.get("SELECT 1 AS one")
        async with db.transaction() as tx:
            await tx.get("SELECT 1 AS one")
    name = DatabaseURL.parse(direct).database
    with psycopg.connect(direct, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                           [name]).fetchone()
    assert row is not None
    assert row[0] <= 3  # PgBouncer's 2, and this one
    # Another client of the pooler, on either server connection, sees the defaults.
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(4):
            got = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
            assert got == ("0",)  # the server default: nothing of ours stayed


async def test_row_security_scopes_are_refused(db: aio.AsyncDatabase) -> None:
    with pytest.raises(CapabilityError, match="pooler"):
        async with db.scope(team_id=1) as tx:
            await tx.all("SELECT 1")

    async def read(tx: aio.AsyncTransaction) -> Any:
        return await tx.all("SELECT 1")

    with pytest.raises(CapabilityError, match="pooler"):
        await db.atomic(read, team_id=2)
    assert await db.get("SELECT 1 AS one") == {"one": 1}  # nothing was left borrowed


async def test_listen_needs_a_direct_url(db: aio.AsyncDatabase, url: str, direct: str) -> None:
    with pytest.raises(CapabilityError, match="listen_url"):
        async with db.listen("jobs"):
            pass
    listener = await aio.create_database(
        url, pool=PoolOptions(pooler="transaction", listen_url=direct))
    try:
        async with listener.listen("jobs") as sub:
            await db.notify("jobs", "through the pooler")
            async with db.transaction() as tx:
                await tx.run("SELECT pg_notify('jobs', 'in a transaction')")
            got = [await sub.get(timeout=HANG), await sub.get(timeout=HANG)]
        assert [n.payload for n in got if n] == ["through the pooler", "in a transaction"]
    finally:
        await listener.close()


async def test_errors_are_store_errors_and_the_connection_stays_usable(
        db: aio.AsyncDatabase) -> None:
    await db.run("INSERT INTO t (k) VALUES ('dup')")
    with pytest.raises(IntegrityError) as info:
        await db.run("INSERT INTO t (k) VALUES ('dup')")
    assert isinstance(info.value.__cause__, psycopg.Error)
    with pytest.raises(StoreError) as other:
        await db.get("SELECT nope FROM t")
    assert isinstance(other.value.__cause__, psycopg.Error)
    for _ in range(4):  # whichever server connection comes next is clean
        assert await db.get("SELECT count(*) AS c FROM t") == {"c": 1}
