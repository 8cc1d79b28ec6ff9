"""The PostgreSQL storekit.aio path that sends a transaction in one round trip: BEGIN goes
with the first statement, writes held back (run_deferred, as StorekitSaver's put and
put_writes use) go with COMMIT, or without BEGIN/COMMIT as one implicit transaction at
READ COMMITTED. Whatever fails in that pipeline leaves nothing half written, a conflict
is still retried by atomic(), and a savepoint's held-back writes stay inside it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from storekit import IntegrityError, StoreError, TransactionConflict, aio
from storekit.langgraph import StorekitSaver
from tests.storekit.test_langgraph import checkpoint, config

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def db(storekit_postgres_url: str) -> AsyncIterator[aio.AsyncDatabase]:
    async with await aio.create_database(storekit_postgres_url) as database:
        yield database


@pytest.fixture
async def table(db: aio.AsyncDatabase) -> AsyncIterator[str]:
    name = f"pipe_{uuid.uuid4().hex[:8]}"
    await db.exec(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL)")
    yield name
    await db.exec(f"DROP TABLE {name}")


async def other(db: aio.AsyncDatabase, sql: str) -> None:
    """sql committed by another session: a task of its own does not join this one's
    transaction."""
    await asyncio.create_task(db.run(sql))


async def count(db: aio.AsyncDatabase, table: str) -> int:
    row = await db.get(f"SELECT count(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read", "serializable"])
async def test_a_held_back_write_that_fails_leaves_nothing(
        db: aio.AsyncDatabase, table: str, isolation: str) -> None:
    """Two held-back inserts, the second a duplicate key: the first is not kept, whether
    the pipeline was BEGIN ... COMMIT or the implicit transaction (read committed)."""

    async def body(tx: aio.AsyncTransaction) -> None:
        handle: Any = tx._h()
        await handle.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (1, 1))
        await handle.run_many_deferred(f"INSERT INTO {table} VALUES (?, ?)",
                                       [(2, 2), (3, 3), (2, 4)])

    with pytest.raises(IntegrityError) as caught:
        await db.atomic(body, isolation=isolation)
    assert caught.value.__cause__ is not None  # the driver's error
    assert await count(db, table) == 0
    # The connection went back clean: the next transaction works and commits.
    await db.atomic(lambda tx: tx.run(f"INSERT INTO {table} VALUES (?, ?)", (9, 9)))
    assert await count(db, table) == 1


@pytest.mark.parametrize("isolation", ["read committed", "serializable"])
async def test_held_back_writes_commit_whole(db: aio.AsyncDatabase, table: str,
                                             isolation: str) -> None:
    async def body(tx: aio.AsyncTransaction) -> None:
        handle: Any = tx._h()
        await handle.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (1, 1))
        await handle.run_many_deferred(f"INSERT INTO {table} VALUES (?, ?)", [(2, 2), (3, 3)])

    await db.atomic(body, isolation=isolation)
    assert await count(db, table) == 3


async def test_a_conflict_raised_at_commit_is_retried(db: aio.AsyncDatabase,
                                                      table: str) -> None:
    """A serializable transaction reads a row, another session changes it, then the held-
    back update goes out with COMMIT: the conflict surfaces there as TransactionConflict
    and atomic() runs the body again, so neither increment is lost."""
    await db.run(f"INSERT INTO {table} VALUES (1, 0)")
    attempts: list[BaseException | None] = []

    async def body(tx: aio.AsyncTransaction) -> None:
        row = await tx.get(f"SELECT v FROM {table} WHERE id = 1")
        assert row is not None
        if not attempts:
            await other(db, f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        attempts.append(None)
        handle: Any = tx._h()
        await handle.run_deferred(f"UPDATE {table} SET v = ? WHERE id = 1", (row["v"] + 1,))

    await db.atomic(body, isolation="serializable")
    assert len(attempts) == 2
    final = await db.get(f"SELECT v FROM {table} WHERE id = 1")
    assert final is not None
    assert final["v"] == 2

    # Without atomic's retry the conflict is raised, its class kept, nothing written.
    async def once(tx: aio.AsyncTransaction) -> None:
        await tx.get(f"SELECT v FROM {table} WHERE id = 1")
        await other(db, f"UPDATE {table} SET v = 10 WHERE id = 1")
        handle: Any = tx._h()
        await handle.run_deferred(f"UPDATE {table} SET v = 20 WHERE id = 1")

    with pytest.raises(TransactionConflict):
        await db.atomic(once, isolation="serializable", retries=0)
    final = await db.get(f"SELECT v FROM {table} WHERE id = 1")
    assert final is not None
    assert final["v"] == 10


async def test_a_savepoint_keeps_its_held_back_writes(db: aio.AsyncDatabase,
                                                      table: str) -> None:
    """A held-back write that fails when its savepoint ends rolls back to the savepoint
    only; one inside a savepoint rolled back never runs; the outer transaction commits."""
    async with db.transaction() as tx:
        await tx.run(f"INSERT INTO {table} VALUES (1, 1)")
        with pytest.raises(IntegrityError):
            async with db.transaction() as inner:
                handle: Any = inner._h()
                await handle.run_deferred(f"INSERT INTO {table} VALUES (2, 2)")
                await handle.run_deferred(f"INSERT INTO {table} VALUES (1, 5)")  # duplicate
        with pytest.raises(RuntimeError):
            async with db.transaction() as inner:
                handle = inner._h()
                await handle.run_deferred(f"INSERT INTO {table} VALUES (3, 3)")
                raise RuntimeError("abandon the savepoint")
        async with db.transaction() as inner:
            handle = inner._h()
            await handle.run_deferred(f"INSERT INTO {table} VALUES (4, 4)")
    rows = await db.all(f"SELECT id FROM {table} ORDER BY id")
    assert [r["id"] for r in rows] == [1, 4]


async def test_an_empty_or_lazily_begun_transaction(db: aio.AsyncDatabase,
                                                    table: str) -> None:
    """BEGIN goes out with the first statement: a transaction with none commits and rolls
    back without a word to the server, and one whose first statement fails is still whole
    (the error raised, nothing kept, the connection usable)."""
    async with db.transaction():
        pass
    with pytest.raises(RuntimeError):
        async with db.transaction():
            raise RuntimeError("nothing ran")
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.run(f"INSERT INTO {table} VALUES (1, NULL)")
    async with db.transaction(isolation="repeatable read") as tx:
        row = await tx.get("SELECT current_setting('transaction_isolation') AS level")
        assert row is not None
        assert row["level"] == "repeatable read"
        await tx.run(f"INSERT INTO {table} VALUES (1, 1)")
    assert await count(db, table) == 1


@pytest.fixture
async def saver(db: aio.AsyncDatabase) -> AsyncIterator[StorekitSaver]:
    saver = StorekitSaver(db)
    await saver.asetup()
    # A trigger refusing one channel: a put_writes batch then fails at its last row, on
    # the server, after the rows before it were sent in the same pipeline.
    await db.exec(
        "CREATE OR REPLACE FUNCTION pipe_refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF to_jsonb(NEW)->>'channel' = 'poison' OR NEW.thread_id = 'poisoned' THEN"
        " RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF;"
        " RETURN NEW; END $$;"
        " CREATE TRIGGER pipe_refuse_writes BEFORE INSERT ON langgraph_writes"
        " FOR EACH ROW EXECUTE FUNCTION pipe_refuse();"
        " CREATE TRIGGER pipe_refuse_checkpoints BEFORE INSERT ON langgraph_checkpoints"
        " FOR EACH ROW EXECUTE FUNCTION pipe_refuse();")
    yield saver
    await db.exec("DROP TRIGGER pipe_refuse_writes ON langgraph_writes;"
                  " DROP TRIGGER pipe_refuse_checkpoints ON langgraph_checkpoints;"
                  " DROP FUNCTION pipe_refuse()")


async def test_saver_put_writes_failing_midway_keeps_nothing(saver: StorekitSaver,
                                                             db: aio.AsyncDatabase) -> None:
    thread = f"pipe-{uuid.uuid4().hex[:8]}"
    stored = await saver.aput(config(thread), checkpoint(0, messages="a"),
                              {"source": "loop", "step": 0}, {})
    with pytest.raises(StoreError) as caught:
        await saver.aput_writes(stored, [("a", 1), ("b", 2), ("poison", 3)], "task-1")
    assert caught.value.__cause__ is not None
    found = await saver.aget_tuple(stored)
    assert found is not None
    assert found.pending_writes == []
    # The saver goes on: the next batch is stored whole.
    await saver.aput_writes(stored, [("a", 1), ("b", 2)], "task-1")
    found = await saver.aget_tuple(stored)
    assert found is not None
    assert [(t, c, v) for t, c, v in found.pending_writes] == [
        ("task-1", "a", 1), ("task-1", "b", 2)]


async def test_saver_put_that_fails_stores_nothing(saver: StorekitSaver,
                                                   db: aio.AsyncDatabase) -> None:
    with pytest.raises(StoreError):
        await saver.aput(config("poisoned"), checkpoint(0, messages="a"),
                         {"source": "loop", "step": 0}, {})
    assert await saver.aget_tuple(config("poisoned")) is None
    # Inside a caller's transaction the saver joins it (its isolation kept): the put is
    # held back to that transaction's commit, and goes with its rollback.
    thread = f"pipe-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await saver.aput(config(thread), checkpoint(1, messages="b"),
                             {"source": "loop", "step": 1}, {})
            raise RuntimeError("roll the caller's transaction back")
    assert await saver.aget_tuple(config(thread)) is None
    async with db.transaction():
        await saver.aput(config(thread), checkpoint(1, messages="b"),
                         {"source": "loop", "step": 1}, {})
    found = await saver.aget_tuple(config(thread))
    assert found is not None
    assert found.checkpoint["channel_values"] == {"messages": "b"}
