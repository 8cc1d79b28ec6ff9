"""storekit.aio's pooled-connection reset, as the sync backend's (test_session_reset.py):
it runs only after SQL that may change the session, a transaction left open, or a failed
or cancelled statement, and always after those: the next borrower starts clean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

import storekit
from storekit import aio

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def one_conn(storekit_postgres_url: str) -> AsyncIterator[aio.AsyncDatabase]:
    """One pooled connection, so every call reuses the previous caller's session."""
    db = await aio.create_database(storekit_postgres_url,
                                   pool=storekit.PoolOptions(min_size=1, max_size=1))
    await db.exec("DROP FUNCTION IF EXISTS storekit_test_aset_path();"
                  " CREATE FUNCTION storekit_test_aset_path() RETURNS int LANGUAGE sql AS"
                  " $$ SELECT set_config('search_path', 'pg_catalog', false); SELECT 1 $$;"
                  " DROP TABLE IF EXISTS storekit_test_aseq;"
                  " CREATE TABLE storekit_test_aseq (id bigserial PRIMARY KEY, n int)")
    try:
        yield db
    finally:
        await db.exec("DROP FUNCTION IF EXISTS storekit_test_aset_path();"
                      " DROP TABLE IF EXISTS storekit_test_aseq")
        await db.close()


async def _state(db: aio.AsyncDatabase) -> dict[str, object]:
    row = await db.get(
        "SELECT current_setting('search_path') AS path, current_user AS who,"
        " coalesce(current_setting('storekit_test.marker', true), '') AS marker,"
        " now() = statement_timestamp() AS fresh_transaction,"
        " (SELECT count(*) FROM pg_listening_channels()) AS listening,"
        " (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS prepared,"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        "  AND pid = pg_backend_pid()) AS locks")
    assert row is not None
    return row


async def _tx_set(db: aio.AsyncDatabase) -> None:
    async with db.transaction() as tx:
        await tx.exec("SET storekit_test.marker = 'dirty'")  # not SET LOCAL: outlives it


async def _left_open(db: aio.AsyncDatabase) -> None:
    await db.exec("BEGIN")  # plain SQL, but the transaction must not reach the next caller


async def _run_many(db: aio.AsyncDatabase) -> None:
    await db.run_many("INSERT INTO storekit_test_aseq (n)"
                      " SELECT length(set_config('search_path', 'pg_catalog', false)) + ?",
                      [(1,)])


DIRTY: dict[str, Callable[[aio.AsyncDatabase], Awaitable[object]]] = {
    "run set_config": lambda db: db.run("SELECT set_config('search_path', 'pg_catalog', false)"),
    "run custom GUC": lambda db: db.run(
        "SELECT set_config('storekit_test.marker', 'dirty', false)"),
    "get a function that sets": lambda db: db.get("SELECT storekit_test_aset_path() AS x"),
    "all advisory lock": lambda db: db.all("SELECT pg_advisory_lock(11)"),
    "exec SET": lambda db: db.exec("SET storekit_test.marker = 'dirty'"),
    "exec LISTEN": lambda db: db.exec("LISTEN storekit_test_channel"),
    "exec PREPARE": lambda db: db.exec("PREPARE storekit_test_p AS SELECT 1"),
    "exec SET ROLE": lambda db: db.exec("SET ROLE pg_monitor"),
    "tx SET": _tx_set,
    "tx set_config": lambda db: db.atomic(lambda tx: tx.get(
        "SELECT set_config('search_path', 'pg_catalog', false) AS x")),
    "run_many set_config": _run_many,
    "transaction left open": _left_open,
}


async def _iter_set(db: aio.AsyncDatabase) -> None:
    async for _ in db.iter("SELECT set_config('storekit_test.marker', 'dirty', false) AS x"):
        pass


DIRTY["iter set_config"] = _iter_set


@pytest.mark.parametrize("how", list(DIRTY))
async def test_a_caller_that_changes_the_session_is_still_reset(
        one_conn: aio.AsyncDatabase, how: str) -> None:
    clean = await _state(one_conn)
    assert clean["listening"] == clean["prepared"] == clean["locks"] == 0
    assert clean["marker"] == ""
    assert clean["fresh_transaction"] is True
    await DIRTY[how](one_conn)
    assert await _state(one_conn) == clean


async def _lastval(db: aio.AsyncDatabase) -> object:
    """lastval() of the session: DISCARD SEQUENCES in the reset forgets it."""
    try:
        row = await db.get("SELECT lastval() AS v")
    except storekit.StoreError:
        return None  # "lastval is not yet defined in this session": it was reset
    assert row is not None
    return row["v"]


async def test_plain_statements_skip_the_reset(one_conn: aio.AsyncDatabase) -> None:
    """After plain statements the session is handed on as it is (the reset would have
    cleared lastval()), so no round trip was spent resetting it."""
    await one_conn.run("INSERT INTO storekit_test_aseq (n) VALUES (?)", (1,))
    await one_conn.get("SELECT count(*) AS n FROM storekit_test_aseq WHERE n = ?", (1,))
    await one_conn.all("SELECT id FROM storekit_test_aseq")
    await one_conn.run("UPDATE storekit_test_aseq SET n = n + 1")
    assert await _lastval(one_conn) == 1


async def test_a_failed_plain_statement_is_reset(one_conn: aio.AsyncDatabase) -> None:
    await one_conn.run("INSERT INTO storekit_test_aseq (n) VALUES (?)", (0,))
    with pytest.raises(storekit.StoreError):
        await one_conn.get("SELECT 1 / n AS x FROM storekit_test_aseq WHERE n = ?", (0,))
    assert await _lastval(one_conn) is None


async def test_a_cancelled_plain_statement_is_reset(
        one_conn: aio.AsyncDatabase, storekit_postgres_url: str) -> None:
    """Cancelled while a plain statement waits on a row lock: the session it leaves is
    reset (or the connection replaced) before the next caller gets it."""
    await one_conn.run("INSERT INTO storekit_test_aseq (n) VALUES (?)", (1,))
    async with await psycopg.AsyncConnection.connect(storekit_postgres_url) as other:
        await other.execute("SELECT id FROM storekit_test_aseq FOR UPDATE")  # holds the lock
        task = asyncio.ensure_future(one_conn.run("UPDATE storekit_test_aseq SET n = 2"))
        for _ in range(200):  # until the UPDATE waits on the lock (bounded: never hangs)
            cur = await other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'UPDATE storekit_test_aseq%%'")
            row = await cur.fetchone()
            if row is not None and row[0]:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, storekit.StoreError)):
            await task
        await other.rollback()
    assert await _lastval(one_conn) is None
    assert (await _state(one_conn))["fresh_transaction"] is True
