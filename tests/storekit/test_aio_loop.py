"""storekit.aio keeps the event loop running, and cancellation leaves nothing wedged.

Loop checks count a ticker's ticks while a slow call runs: a call that blocked the loop
would let it tick about once, whatever the machine's speed. Cancellation checks use real
tasks, real files and another real process, and assert only what the data determines.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import storekit
from storekit import aio
from tests.helpers import start_holder

pytestmark = pytest.mark.anyio

# Several times 300 ms on any machine: a recursive count of 4 million rows.
SLOW_SQLITE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
               " WHERE x < 4000000) SELECT count(*) AS n FROM c")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Ticker:
    """Counts 1 ms ticks and the longest gap between two."""

    def __init__(self) -> None:
        self.ticks = 0
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            self.worst = max(self.worst, now - last)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _slow(db: aio.AsyncDatabase) -> str:
    return SLOW_SQLITE if db.backend == "sqlite" else "SELECT pg_sleep(0.3) AS n"


async def test_a_slow_query_does_not_block_the_loop(astore: aio.AsyncDatabase) -> None:
    async with Ticker() as ticker:
        started = time.monotonic()
        row = await astore.get(_slow(astore))
        took = time.monotonic() - started
    assert row is not None
    assert took >= 0.3
    # Blocking the loop for the whole query would allow about one tick.
    assert ticker.ticks >= 20, (ticker.ticks, took)
    assert ticker.worst < took / 2, (ticker.worst, took)


async def test_a_slow_read_inside_a_write_transaction_runs_off_the_loop(
        astore: aio.AsyncDatabase) -> None:
    await astore.exec("CREATE TABLE t (x INTEGER)")
    async with astore.transaction() as tx:
        await tx.run("INSERT INTO t VALUES (1)")
        async with Ticker() as ticker:
            await tx.get(_slow(astore))
        await tx.run("INSERT INTO t VALUES (2)")
    assert ticker.ticks >= 20
    assert await astore.get("SELECT count(*) AS n FROM t") == {"n": 2}  # still one transaction


HOLD_SQLITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO t VALUES (0)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def test_waiting_for_another_programs_write_lock_does_not_block_the_loop(
        tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with await aio.open_database(path) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        holder = start_holder(HOLD_SQLITE_LOCK, path, 0.6)
        try:
            async with Ticker() as ticker:
                await db.run("INSERT INTO t VALUES (1)")  # waits in a thread
        finally:
            holder.wait(30)
            holder.communicate()
        assert ticker.ticks >= 20
        assert await db.get("SELECT count(*) AS n FROM t") == {"n": 2}


async def _usable(db: aio.AsyncDatabase, url: str) -> None:
    """The next task and another process can both write."""
    await asyncio.wait_for(db.run("INSERT INTO t (x) VALUES (100)"), 30)
    code = ("import storekit, sys\n"
            "with storekit.create_database(sys.argv[1], busy_timeout_ms=20000) as db:\n"
            "    db.run('INSERT INTO t (x) VALUES (200)')\n")
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, url],
                                   timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = await db.all("SELECT x FROM t WHERE x >= 100 ORDER BY x")
    assert [r["x"] for r in rows] == [100, 200]


async def test_cancelled_inside_a_transaction_rolls_back(store_url: str) -> None:
    async with await aio.create_database(store_url) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        in_tx = asyncio.Event()

        async def writer() -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t (x) VALUES (1)")
                in_tx.set()
                await tx.get(_slow(db))  # cancelled in here (a thread, or the server)

        task = asyncio.create_task(writer())
        await in_tx.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.get("SELECT count(*) AS n FROM t") == {"n": 0}
        await _usable(db, store_url)


async def test_cancelled_while_idle_in_a_transaction_rolls_back(store_url: str) -> None:
    async with await aio.create_database(store_url) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")

        async def writer() -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t (x) VALUES (1)")
                await asyncio.sleep(30)

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await writer()
        assert await db.get("SELECT count(*) AS n FROM t") == {"n": 0}
        await _usable(db, store_url)


async def test_timeout_around_a_slow_query(store_url: str) -> None:
    pool = None if store_url.startswith("sqlite") else storekit.PoolOptions(max_size=1)
    async with await aio.create_database(store_url, pool=pool) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        slow = SLOW_SQLITE.replace("4000000", "400000000") if db.backend == "sqlite" \
            else "SELECT pg_sleep(30)"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await db.get(slow)
        assert time.monotonic() - started < 20  # the query was stopped, not waited out
        # With max_size=1 this needs the one connection back, clean.
        assert await db.get("SELECT 1 AS one") == {"one": 1}
        await _usable(db, store_url)


async def test_cancelled_while_queued_for_the_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with await aio.create_database(url) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        order: list[str] = []
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t (x) VALUES (1)")
                holding.set()
                await release.wait()
            order.append("holder")

        async def queued(name: str) -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t (x) VALUES (2)")
            order.append(name)

        first = asyncio.create_task(holder())
        await holding.wait()
        tasks = {name: asyncio.create_task(queued(name)) for name in ("a", "b", "c", "d")}
        await asyncio.sleep(0.05)
        tasks["b"].cancel()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await queued("e")  # gives up while queued
        release.set()
        await asyncio.wait_for(asyncio.gather(first, tasks["a"], tasks["c"], tasks["d"]), 30)
        assert tasks["b"].cancelled()
        assert order == ["holder", "a", "c", "d"]  # arrival order; no turn leaked
        assert await db.get("SELECT count(*) AS n FROM t") == {"n": 4}
        await _usable(db, url)


HOLD_STOREKIT_TURN = """
import storekit, sys, time
with storekit.create_database(sys.argv[1]) as db:
    with db.transaction() as tx:
        tx.run("INSERT INTO t (x) VALUES (0)")
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
"""


async def test_cancelled_while_waiting_for_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    async with await aio.create_database(url) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        holder = start_holder(HOLD_STOREKIT_TURN, url, 1.0)
        try:
            async with Ticker() as ticker:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await db.run("INSERT INTO t (x) VALUES (1)")
            assert ticker.ticks >= 20  # the wait was off the loop
            # The next write waits for the other process, then goes through.
            await asyncio.wait_for(db.run("INSERT INTO t (x) VALUES (2)"), 30)
        finally:
            holder.wait(30)
            holder.communicate()
        rows = await db.all("SELECT x FROM t ORDER BY x")
        assert [r["x"] for r in rows] == [0, 2]
        await _usable(db, url)


async def test_many_tasks_with_cancellations_keep_an_exact_count(store_url: str) -> None:
    async with await aio.create_database(store_url) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        await db.exec("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)")
        await db.run("INSERT INTO c VALUES (1, 0)")

        async def bump(tx: Any) -> None:
            row = await tx.get("SELECT n FROM c WHERE id = 1")
            await asyncio.sleep(0)
            await tx.run("UPDATE c SET n = ? WHERE id = 1", (row["n"] + 1,))
            await tx.run("INSERT INTO t (x) VALUES (-1)")

        async def one() -> bool:
            await db.atomic(bump, retries=1000)
            return True

        tasks = [asyncio.create_task(one()) for _ in range(100)]
        await asyncio.sleep(0.01)
        for task in tasks[::3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        done = sum(r is True for r in results)
        assert all(r is True or isinstance(r, asyncio.CancelledError) for r in results)
        # A task cancelled just after its COMMIT (PostgreSQL: while the connection is
        # reset) did commit: what the data shows is that every commit counted once.
        commits = (await db.get("SELECT count(*) AS n FROM t WHERE x = -1") or {})["n"]
        assert done <= commits <= len(tasks)
        assert await db.get("SELECT n FROM c WHERE id = 1") == {"n": commits}
        await _usable(db, store_url)
