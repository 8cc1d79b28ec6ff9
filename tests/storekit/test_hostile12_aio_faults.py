"""storekit.aio on SQLite under faults: another process holding the lock (plain sqlite3),
cancellation at the awaits of a write transaction, close() among queued tasks.

The defect found: the event loop's connections have busy_timeout 0, and SQLite, unable
to lock the file to check its cached schema, reports that schema's answer ("no such
table" for a table another connection just created) instead of SQLITE_BUSY. Such a
statement now runs again in a thread, waiting for the lock as the sync API does."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from storekit import BusyError, SqliteOptions, StoreError, aio
from tests.helpers import HOLD_UNTIL_TOLD, let_go, start_holder

pytestmark = pytest.mark.anyio
WAIT_S = 30.0  # a guard against hanging only

# Another program: creates a table (so storekit's cached schema is stale), then holds an
# exclusive lock until told to let go (a line on stdin).
EXCLUSIVE = r"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("CREATE TABLE fresh (v INTEGER)")
c.execute("INSERT INTO fresh (v) VALUES (1)")
c.execute("BEGIN EXCLUSIVE")
print("holding", flush=True)
sys.stdin.readline()
c.execute("COMMIT")
"""

def _two_rows(db: aio.AsyncDatabase, acked: list[int]) -> Callable[[int], Awaitable[None]]:
    """A transaction writing rows i and 10,000 + i, with a turn for other tasks between;
    i goes to acked once it committed."""

    async def two_rows(i: int) -> None:
        async with db.transaction() as tx:
            await tx.run("INSERT INTO acks (k) VALUES (?)", (i,))
            await asyncio.sleep(0)
            await tx.run("INSERT INTO acks (k) VALUES (?)", (10_000 + i,))
        acked.append(i)

    return two_rows


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("begin", ["immediate", "deferred"])
async def test_stale_schema_behind_another_process_lock_waits(tmp_path: Path,
                                                              begin: str) -> None:
    path = tmp_path / "s.db"
    db = await aio.create_database(f"sqlite:///{path}", busy_timeout_ms=20_000,
                                   sqlite=SqliteOptions(journal_mode="delete", begin=begin))
    try:
        await db.exec("CREATE TABLE acks (k INTEGER PRIMARY KEY)")
        assert await db.get("SELECT count(*) AS n FROM acks") == {"n": 0}  # schema cached
        proc = start_holder(EXCLUSIVE, path, told=True)
        try:
            async def in_readonly() -> Any:
                async with db.transaction(readonly=True) as tx:
                    return await tx.get("SELECT count(*) AS n FROM fresh")

            async def iterated() -> Any:
                return [r async for r in db.iter("SELECT v FROM fresh")]

            async def in_write_tx() -> Any:  # a deferred BEGIN does not take the lock
                async with db.transaction() as tx:
                    return await tx.get("SELECT count(*) AS n FROM fresh")

            # The write connection's call, first in its queue: the one that meets the lock.
            write = (in_write_tx() if begin == "deferred"
                     else db.run("INSERT INTO fresh (v) VALUES (2)"))
            calls = [db.get("SELECT count(*) AS n FROM fresh"),
                     db.all("SELECT v FROM fresh"), write, in_readonly(), iterated()]
            tasks = [asyncio.create_task(c) for c in calls]
            # Each meets the lock: on the old code each failed at once ("no such table").
            await asyncio.wait(tasks, timeout=0.5)
        finally:
            let_go(proc, WAIT_S)
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
        assert [r for r in got if isinstance(r, BaseException)] == []
        assert got[0]["n"] >= 1
        assert {"v": 1} in got[1]
        assert {"v": 1} in got[4]
        assert got[3]["n"] >= 1
        if begin == "deferred":
            assert got[2]["n"] >= 1
        else:
            assert await db.get("SELECT count(*) AS n FROM fresh WHERE v = 2") == {"n": 1}
        with pytest.raises(StoreError, match="no such table"):  # a real one still fails
            await db.get("SELECT * FROM missing")
        with pytest.raises(StoreError, match="no such table"):
            await db.run("INSERT INTO missing VALUES (1)")
    finally:
        await db.close()


@pytest.mark.parametrize("journal", ["wal", "delete"])
async def test_writers_behind_begin_immediate_succeed_or_busy(tmp_path: Path,
                                                                journal: str) -> None:
    path = tmp_path / "b.db"
    db = await aio.create_database(f"sqlite:///{path}", busy_timeout_ms=300,
                                   sqlite=SqliteOptions(journal_mode=journal))
    await db.exec("CREATE TABLE acks (k INTEGER PRIMARY KEY)")
    acked: list[int] = []

    async def write(i: int) -> None:
        if i % 2:
            await db.run("INSERT INTO acks (k) VALUES (?)", (i,))
        else:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO acks (k) VALUES (?)", (i,))
                await tx.run("INSERT INTO acks (k) VALUES (?)", (10_000 + i,))
        acked.append(i)

    proc = start_holder(HOLD_UNTIL_TOLD, path, "INSERT INTO acks (k) VALUES (-1)",
                        told=True)
    try:
        tasks = [asyncio.create_task(write(i)) for i in range(200)]
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
    finally:
        let_go(proc, WAIT_S)
    # Held past the busy timeout (until told): every writer gave up with BusyError.
    assert all(isinstance(r, BusyError) for r in got), {type(r) for r in got}
    tasks = [asyncio.create_task(write(i)) for i in range(200, 400)]
    got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
    assert [r for r in got if r is not None] == []
    rows = {r["k"] for r in await db.all("SELECT k FROM acks")}
    await db.close()
    assert -1 in rows
    assert all(i in rows for i in acked)
    assert all((10_000 + i in rows) == (i in rows) for i in range(0, 400, 2))


SLOW_READ = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
             "SELECT count(*) AS n FROM c")


async def test_cancel_at_every_await_of_a_write_transaction(tmp_path: Path) -> None:
    db = await aio.create_database(f"sqlite:///{tmp_path / 'c.db'}")
    await db.exec("CREATE TABLE acks (k INTEGER PRIMARY KEY)")
    started = asyncio.Event()

    async def off_loop_read() -> None:  # an endless read: interrupted, then in a thread
        async with db.transaction() as tx:
            await tx.run("INSERT INTO acks (k) VALUES (-1)")
            started.set()
            await tx.get(SLOW_READ)

    async def off_loop_script() -> None:  # a script runs in the writer's thread
        async with db.transaction() as tx:
            await tx.run("INSERT INTO acks (k) VALUES (-2)")
            started.set()
            await tx.exec("INSERT INTO acks (k) " + SLOW_READ.replace("count(*) AS n", "x")
                          .replace("SELECT 1 UNION", "SELECT 1000 UNION") + ";")

    for fn in (off_loop_read, off_loop_script):
        started.clear()
        task = asyncio.create_task(fn())
        await asyncio.wait_for(started.wait(), WAIT_S)
        await asyncio.sleep(0.05)
        task.cancel()
        got = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT_S)
        assert isinstance(got[0], asyncio.CancelledError)
        assert await db.all("SELECT k FROM acks") == []  # nothing of it committed

    # 200 queued transactions, some cancelled while queued, at BEGIN, mid-way, at COMMIT.
    acked: list[int] = []

    two_rows = _two_rows(db, acked)

    tasks = [asyncio.create_task(two_rows(i)) for i in range(200)]
    for step in range(60):
        await asyncio.sleep(0)
        tasks[(step * 7) % 200].cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
    rows = {r["k"] for r in await db.all("SELECT k FROM acks")}
    assert all(i in rows for i in acked)
    assert all((i in rows) == (10_000 + i in rows) for i in range(200))
    await db.run("INSERT INTO acks (k) VALUES (-9)")  # the write connection still works
    await db.close()


async def test_close_among_running_and_queued_tasks(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = await aio.create_database(f"sqlite:///{path}")
    await db.exec("CREATE TABLE acks (k INTEGER PRIMARY KEY)")
    acked: list[int] = []

    two_rows = _two_rows(db, acked)

    tasks = [asyncio.create_task(two_rows(i)) for i in range(200)]
    tasks.append(asyncio.create_task(db.get(SLOW_READ.replace("FROM c)", "FROM c LIMIT 3000000)"))))
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.wait_for(db.close(), WAIT_S)
    got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
    assert [r for r in got if r is not None and not isinstance(r, (StoreError, dict))] == []
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = {k for (k,) in conn.execute("SELECT k FROM acks")}
    finally:
        conn.close()
    assert all(i in rows for i in acked)
    assert all((i in rows) == (10_000 + i in rows) for i in range(200))


# Another storekit process (the sync API) holding the write turn and SQLite's lock.
SYNC_HOLDER = r"""
import sys, time, storekit
db = storekit.create_database(f"sqlite:///{sys.argv[1]}", busy_timeout_ms=300)
with db.transaction() as tx:
    tx.run("INSERT INTO acks (k) VALUES (-1)")
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_stopped_then_killed_turn_holder(tmp_path: Path) -> None:
    import os
    import signal

    path = tmp_path / "k.db"
    db = await aio.create_database(f"sqlite:///{path}", busy_timeout_ms=300)
    await db.exec("CREATE TABLE acks (k INTEGER PRIMARY KEY)")
    acked: list[int] = []

    async def write(i: int) -> None:
        async with db.transaction() as tx:
            await tx.run("INSERT INTO acks (k) VALUES (?)", (i,))
        acked.append(i)

    proc = subprocess.Popen([sys.executable, "-c", SYNC_HOLDER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "holding"
        os.kill(proc.pid, signal.SIGSTOP)
        tasks = [asyncio.create_task(write(i)) for i in range(200)]
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
        # Stopped with SQLite's lock: past the stall, the busy timeout ends each wait.
        assert all(isinstance(r, BusyError) for r in got), {type(r) for r in got}
        tasks = [asyncio.create_task(write(i)) for i in range(200, 400)]
        await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        got = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
        assert all(r is None or isinstance(r, BusyError) for r in got), got
        await write(1000)  # the lock is free now: a write succeeds
    finally:
        proc.kill()
        proc.wait(WAIT_S)
        if proc.stdout is not None:
            proc.stdout.close()
    rows = {r["k"] for r in await db.all("SELECT k FROM acks")}
    await db.close()
    assert -1 not in rows  # the killed process's transaction never committed
    assert all(i in rows for i in acked)


# close() while a statement runs in a thread for ever, with tasks queued behind it. In a
# process of its own: on the old code close() waited for the thread, which never ends.
CLOSE_ENDLESS = r"""
import asyncio, sqlite3, sys
from storekit import StoreError, aio

ENDLESS = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT {} FROM c")

async def main(path):
    db = await aio.create_database(f"sqlite:///{path}")
    await db.exec("CREATE TABLE acks (k INTEGER PRIMARY KEY)")
    acked = []

    async def write(i):
        await db.run("INSERT INTO acks (k) VALUES (?)", (i,))
        acked.append(i)

    if sys.argv[2] == "read":  # interrupted on the loop, then run in a reader thread
        first = asyncio.create_task(db.get(ENDLESS.format("count(*) AS n")))
    else:  # a script holds the write connection, in the writer's thread
        first = asyncio.create_task(db.exec("INSERT INTO acks (k) " + ENDLESS.format("x")))
    await asyncio.sleep(0.2)
    tasks = [first, *(asyncio.create_task(write(i)) for i in range(200))]
    await asyncio.sleep(0)
    await db.close()
    got = await asyncio.gather(*tasks, return_exceptions=True)
    odd = [r for r in got if r is not None and not isinstance(r, StoreError)]
    assert odd == [], odd
    assert isinstance(got[0], StoreError), got[0]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = {k for (k,) in conn.execute("SELECT k FROM acks")}
    assert all(i in rows for i in acked)
    print("done")

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("where", ["read", "write"])
def test_close_interrupts_a_statement_running_in_a_thread(tmp_path: Path,
                                                          where: str) -> None:
    done = subprocess.run([sys.executable, "-c", CLOSE_ENDLESS, str(tmp_path / "e.db"), where],
                          capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "done"
