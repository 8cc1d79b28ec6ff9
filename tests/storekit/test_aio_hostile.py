"""storekit.aio's SQLite backend under a hostile schedule: a statement on the loop that
runs past its budget is interrupted by SQLite's progress handler. The handler is called
every PROGRESS_OPS virtual-machine steps counted over a prepared statement's whole life
(sqlite3 caches and reuses it), so even a three-step BEGIN or COMMIT, or a one-row
INSERT, meets it now and then, sometimes after its work is done. BUDGET_S = 0 makes every
such call an interrupt, so what is rare under load (one error in ~15,000 agent steps)
happens within a few thousand calls, whatever the machine's speed."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from pathlib import Path

import pytest

import storekit
from storekit import aio
from storekit.backends.sqlite import aio as sqlite_aio

CALLS = 3000  # several times PROGRESS_OPS / (VM steps of the statement)


@pytest.fixture
def no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_aio, "BUDGET_S", 0.0)


def test_transactions_survive_interrupts_at_begin_and_commit(tmp_path: Path,
                                                             no_budget: None) -> None:
    """An interrupted BEGIN IMMEDIATE had opened the transaction: running it again in a
    thread raised 'cannot start a transaction within a transaction'; an interrupted
    COMMIT could report a rollback. Both are transaction control, never interrupted."""

    async def main() -> int:
        async with await aio.open_database(tmp_path / "t.db") as db:
            await db.run("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)")
            await db.run("INSERT INTO c VALUES (1, 0)")

            async def bump(tx: aio.AsyncTransaction) -> None:
                await tx.run("UPDATE c SET n = n + 1 WHERE id = 1")

            for _ in range(CALLS):
                await db.atomic(bump)
            row = await db.get("SELECT n FROM c WHERE id = 1")
            assert row is not None
            return int(row["n"])

    assert asyncio.run(main()) == CALLS


def test_autocommit_writes_are_not_run_twice(tmp_path: Path, no_budget: None) -> None:
    """An autocommit write reported as interrupted may have committed already (the
    progress handler runs once more after the statement's last step): running it again
    off the loop wrote it twice. Writes on the loop are never interrupted."""

    async def main() -> tuple[int, int, int]:
        async with await aio.open_database(tmp_path / "w.db") as db:
            await db.run("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
            await db.run("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)")
            await db.run("INSERT INTO c VALUES (1, 0)")
            for i in range(CALLS):
                await db.run("INSERT INTO t (x) VALUES (?)", (i,))
                await db.run("UPDATE c SET n = n + 1 WHERE id = 1")
            for i in range(CALLS):  # a write through get() runs on a reader connection
                await db.get("INSERT INTO t (x) VALUES (?) RETURNING id", (-i - 1,))
            rows = await db.all("SELECT COUNT(*) AS n FROM t WHERE x >= 0")
            back = await db.get("SELECT COUNT(*) AS n FROM t WHERE x < 0")
            c = await db.get("SELECT n FROM c WHERE id = 1")
            assert c is not None
            assert back is not None
            return rows[0]["n"], back["n"], c["n"]

    assert asyncio.run(main()) == (CALLS, CALLS, CALLS)


def test_memory_database_writes_are_not_run_twice(no_budget: None) -> None:
    async def main() -> int:
        async with await aio.create_memory_database() as db:
            await db.run("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
            for i in range(CALLS):
                await db.get("INSERT INTO t (x) VALUES (?) RETURNING id", (i,))
            row = await db.get("SELECT COUNT(*) AS n FROM t")
            assert row is not None
            return int(row["n"])

    assert asyncio.run(main()) == CALLS


def test_a_transaction_sqlite_rolled_back_does_not_commit_what_follows(
        tmp_path: Path) -> None:
    """SQLITE_FULL on a one-row INSERT rolls the whole transaction back. A caller that
    catches the error and writes on would have those writes autocommitted one by one,
    and COMMIT would succeed with the first part lost: it must raise instead."""

    async def main() -> list[int]:
        async with await aio.open_database(tmp_path / "f.db") as db:
            await db.run("CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB)")
            pages = await db.get("PRAGMA page_count")
            assert pages is not None
            with pytest.raises(storekit.StoreError) as failed:
                async with db.transaction() as tx:
                    await tx.run("INSERT INTO t (x) VALUES (1)")
                    await tx.exec(f"PRAGMA max_page_count={pages['page_count'] + 2}")
                    with pytest.raises(storekit.StoreError):
                        await tx.run("INSERT INTO t (x) VALUES (zeroblob(1000000))")
                    await tx.run("INSERT INTO t (x) VALUES (2)")
            assert failed.value.__cause__ is not None or "rolled" in str(failed.value)
            return [r["x"] for r in await db.all("SELECT x FROM t ORDER BY id")]

    assert asyncio.run(main()) == []


def test_random_cancellation_leaves_exact_counts_and_no_lock(tmp_path: Path,
                                                             no_budget: None) -> None:
    """Tasks cancelled at seeded random points (asyncio.timeout around atomic and
    notify, task.cancel()) while every statement on the loop meets the interrupt: each
    committed step is counted once, and afterwards another process writes at once."""
    path = tmp_path / "c.db"

    async def main() -> tuple[int, int]:
        rng = random.Random(18)
        async with await aio.open_database(path, busy_timeout_ms=10_000) as db:
            await db.run("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)")
            await db.run("CREATE TABLE log (id INTEGER PRIMARY KEY, agent INTEGER)")
            await db.run_many("INSERT INTO c VALUES (?, 0)", [(i,) for i in range(20)])

            async def step(tx: aio.AsyncTransaction, me: int) -> None:
                row = await tx.get("SELECT n FROM c WHERE id = ?", (me,))
                assert row is not None
                await tx.run("INSERT INTO log (agent) VALUES (?)", (me,))
                await asyncio.sleep(0)
                await tx.run("UPDATE c SET n = ? WHERE id = ?", (row["n"] + 1, me))

            async def agent(me: int) -> None:
                for _ in range(60):
                    delay = rng.choice([None, 0.0, 0.0005, 0.002])
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await db.atomic(step, me)
                            await db.notify("ch", str(me))

            tasks = [asyncio.create_task(agent(i)) for i in range(20)]
            for _ in range(30):
                await asyncio.sleep(rng.random() * 0.01)
                rng.choice(tasks).cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            total = await db.get("SELECT SUM(n) AS n FROM c")
            logged = await db.get("SELECT COUNT(*) AS n FROM log")
            assert total is not None
            assert logged is not None
            mismatched = await db.all(
                "SELECT c.id FROM c WHERE n != (SELECT COUNT(*) FROM log WHERE agent = c.id)")
            assert mismatched == []
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("INSERT INTO log (agent) VALUES (-1)")  # no leaked lock
            finally:
                other.close()
            return int(total["n"]), int(logged["n"])

    total, logged = asyncio.run(main())
    assert total == logged
