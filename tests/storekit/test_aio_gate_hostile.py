"""Hostile tests of storekit.aio's Gate (storekit/aio_gate.py) where it queues tasks: for
a pooled PostgreSQL connection and for SQLite's write connection. Tasks are cancelled,
timed out, closed on and cut off from the server while they queue; every one must get an
answer (a result or a StoreError), none may hang, no place or connection may leak.

Steps are coordinated with events and the gate's own queue length; the clock appears
only as a generous bound on a wait that must end.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

import storekit
from storekit import aio
from tests.helpers import HOLD_UNTIL_TOLD, let_go, start_holder

pytestmark = pytest.mark.anyio
HANG = 60.0  # seconds: an upper bound for "must not hang", never a speed requirement


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _named(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


async def _until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.001)


async def _server_count(url: str, name: str) -> int:
    conn = await psycopg.AsyncConnection.connect(
        storekit.DatabaseURL.parse(url).conninfo(), autocommit=True)
    async with conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name])
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


@contextlib.asynccontextmanager
async def _holding(db: aio.AsyncDatabase) -> AsyncIterator[asyncio.Event]:
    """A task holding a connection (a transaction) until the yielded event is set."""
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as tx:
            await tx.get("SELECT 1 AS one")
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await _until(held.is_set, "the holder")
    try:
        yield release
    finally:
        release.set()
        await asyncio.wait_for(task, HANG)


def _gate(db: aio.AsyncDatabase) -> Any:
    backend: Any = db._backend
    return backend._gate if hasattr(backend, "_gate") else backend._queue


async def _all_places_free(db: aio.AsyncDatabase, size: int) -> None:
    """`size` tasks hold a connection at once (none leaked), and the next one waits."""
    inside, release = asyncio.Event(), asyncio.Event()
    count = 0

    async def hold() -> None:
        nonlocal count
        async with db.transaction() as tx:
            await tx.get("SELECT 1 AS one")
            count += 1
            if count == size:
                inside.set()
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(size)]
    await asyncio.wait_for(inside.wait(), HANG)
    assert not _gate(db).try_acquire()  # exactly size places
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), HANG)


# PostgreSQL ------------------------------------------------------------------------


async def _close_with_tasks_queued(db: aio.AsyncDatabase, sql: str) -> None:
    """A transaction holds the only place; 20 tasks queue behind it; close() comes. The
    queued tasks get a StoreError saying so at once (they used to wait out the whole
    timeout, then raise PoolTimeout or BusyError); the transaction's end reports it too."""
    held = asyncio.Event()
    outcomes: list[Any] = []

    async def holder() -> None:
        async with db.transaction() as tx:
            await tx.run(sql)
            held.set()
            await asyncio.Event().wait()  # until cancelled, after the test's checks

    async def call() -> None:
        try:
            outcomes.append(await db.run(sql))
        except storekit.StoreError as exc:
            outcomes.append(exc)

    holding = asyncio.create_task(holder())
    await _until(held.is_set, "the holder")
    gate = _gate(db)
    tasks = [asyncio.create_task(call()) for _ in range(20)]
    await _until(lambda: gate.waiting == 20, "20 queued")
    await asyncio.wait_for(db.close(), HANG)
    await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    assert len(outcomes) == 20
    assert all(type(o) is storekit.StoreError and "is closed" in str(o) for o in outcomes), (
        outcomes[:3])
    with pytest.raises(storekit.StoreError, match="is closed"):
        await db.run(sql)
    holding.cancel()
    with contextlib.suppress(asyncio.CancelledError, storekit.StoreError):
        await asyncio.wait_for(holding, HANG)


async def test_pg_close_with_tasks_queued_answers_each_at_once(
        storekit_postgres_url: str) -> None:
    db = await aio.create_database(storekit_postgres_url, pool=storekit.PoolOptions(
        max_size=1, timeout=300))
    await _close_with_tasks_queued(db, "SELECT 1")


async def test_sqlite_close_with_tasks_queued_answers_each_at_once(tmp_path: Any) -> None:
    db = await aio.open_database(tmp_path / "close.db", busy_timeout_ms=300_000)
    await db.exec("CREATE TABLE t (x INTEGER)")
    await _close_with_tasks_queued(db, "INSERT INTO t VALUES (1)")


async def test_pg_close_while_a_task_waits_in_the_pool(storekit_postgres_url: str) -> None:
    """A task let through the gate waits in psycopg_pool for a connection being opened;
    close() fails it with psycopg_pool.PoolClosed, which came out raw (no StoreError)."""
    db = await aio.create_database(storekit_postgres_url, pool=storekit.PoolOptions(
        min_size=0, max_size=1, timeout=300))
    pool: Any = db._backend._pool  # type: ignore[attr-defined]
    # The pool's one connection (the one storekit opened it with) taken out behind storekit's
    # back: the gate has a place free, so the next task waits inside the pool.
    taken = await pool.getconn()
    try:
        call = asyncio.create_task(db.get("SELECT 1 AS one"))
        await _until(lambda: len(pool._waiting) == 1, "a task waiting in the pool")
        await asyncio.wait_for(db.close(), HANG)
        with pytest.raises(storekit.StoreError, match="is closed") as caught:
            await asyncio.wait_for(call, HANG)
    finally:
        await taken.close()
    assert type(caught.value) is storekit.StoreError
    assert caught.value.__cause__ is not None


async def test_pg_asyncio_timeout_while_queued_leaves_no_place_behind(
        storekit_postgres_url: str) -> None:
    name = "gaterev_tmo"
    url = _named(storekit_postgres_url, name)
    async with await aio.create_database(url, pool=storekit.PoolOptions(
            max_size=2, timeout=300)) as db:
        async with _holding(db), _holding(db):

            async def call() -> Any:
                async with asyncio.timeout(0.2):
                    return await db.get("SELECT 1 AS one")

            results = await asyncio.wait_for(asyncio.gather(
                *(call() for _ in range(200)), return_exceptions=True), HANG)
            assert all(isinstance(r, TimeoutError) for r in results), results[:3]
        await _all_places_free(db, 2)
        assert await _server_count(storekit_postgres_url, name) <= 2


async def test_pg_pool_timeout_for_many_waiters_at_once(storekit_postgres_url: str) -> None:
    async with await aio.create_database(storekit_postgres_url, pool=storekit.PoolOptions(
            max_size=1, timeout=0.5)) as db:
        async with _holding(db):
            results = await asyncio.wait_for(asyncio.gather(
                *(db.get("SELECT 1 AS one") for _ in range(300)),
                return_exceptions=True), HANG)
        assert all(isinstance(r, storekit.PoolTimeout) for r in results), results[:3]
        assert "max_size=1" in str(results[0])
        assert "***" in str(results[0])  # the password masked
        assert await db.get("SELECT 1 AS one") == {"one": 1}
        await _all_places_free(db, 1)


async def test_pg_fifo_survives_a_cancellation_storm(storekit_postgres_url: str) -> None:
    async with await aio.create_database(storekit_postgres_url, pool=storekit.PoolOptions(
            max_size=1, timeout=300)) as db:
        gate = _gate(db)
        order: list[int] = []
        in_use: set[int] = set()

        async def call(i: int) -> None:
            async with db.transaction() as tx:
                row = await tx.get("SELECT pg_backend_pid() AS pid")
                assert row is not None
                assert row["pid"] not in in_use  # never two tasks on one connection
                in_use.add(row["pid"])
                order.append(i)
                await asyncio.sleep(0)
                in_use.discard(row["pid"])

        async with _holding(db):
            tasks = []
            for i in range(300):
                tasks.append(asyncio.create_task(call(i)))
                await _until(lambda: gate.waiting >= len(tasks), "queued")
            for i in range(0, 300, 3):
                tasks[i].cancel()
        # cancel more while they are being served: every 7th, at staggered moments
        for i in range(1, 300, 7):
            for _ in range(i % 5):
                await asyncio.sleep(0)
            tasks[i].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG)
        assert order == sorted(order)
        assert set(order) >= {i for i in range(300) if i % 3 and (i - 1) % 7}
        await _all_places_free(db, 1)


@pytest.mark.parametrize("steps", range(0, 40))
async def test_pg_cancel_at_every_step_after_admission(storekit_postgres_url: str,
                                                       steps: int) -> None:
    """A queued task is cancelled `steps` loop iterations after the holder lets go:
    at its admission, in the pool, in its statement, in the reset or return."""
    name = f"gaterev_step{steps}"
    url = _named(storekit_postgres_url, name)
    async with await aio.create_database(url, pool=storekit.PoolOptions(
            max_size=1, timeout=300)) as db:
        gate = _gate(db)
        await db.exec("SET work_mem = '8MB'")  # dirty: the next return resets it
        async with _holding(db) as release:
            victim = asyncio.create_task(db.get("SELECT pg_sleep(0.001) AS s"))
            await _until(lambda: gate.waiting == 1, "queued")
            after = asyncio.create_task(db.get("SELECT 2 AS two"))
            await _until(lambda: gate.waiting == 2, "queued")
            release.set()
            for _ in range(steps):
                await asyncio.sleep(0)
            victim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(victim, HANG)
        assert await asyncio.wait_for(after, HANG) == {"two": 2}
        await _all_places_free(db, 1)
        assert await db.get("SHOW work_mem") != {"work_mem": "8MB"}
        assert await _server_count(storekit_postgres_url, name) <= 1


async def _terminate(url: str, name: str) -> int:
    conn = await psycopg.AsyncConnection.connect(
        storekit.DatabaseURL.parse(url).conninfo(), autocommit=True)
    async with conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s", [name])
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_pg_connections_terminated_while_hundreds_queue(
        storekit_postgres_url: str) -> None:
    name = "gaterev_term"
    url = _named(storekit_postgres_url, name)
    async with await aio.create_database(url, pool=storekit.PoolOptions(
            max_size=4, timeout=60)) as db:
        outcomes: list[Any] = []
        started = asyncio.Event()

        async def call(i: int) -> None:
            try:
                async with db.transaction() as tx:
                    started.set()
                    row = await tx.get("SELECT pg_sleep(0.002), ? AS i", (i,))
                outcomes.append(row)
            except storekit.StoreError as exc:
                outcomes.append(exc)

        tasks = [asyncio.create_task(call(i)) for i in range(400)]
        await started.wait()
        for _ in range(3):
            await _terminate(storekit_postgres_url, name)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), HANG)
        assert len(outcomes) == 400
        assert any(isinstance(o, dict) for o in outcomes)
        assert await db.get("SELECT 1 AS one") == {"one": 1}
        await _all_places_free(db, 4)
        assert await _server_count(storekit_postgres_url, name) <= 4


def _stop(server: Any, how: str) -> None:
    if how == "immediate":  # pg_ctl stop -m immediate: SIGQUIT to the postmaster
        server.proc.send_signal(signal.SIGQUIT)
        server.proc.wait(HANG)
        server.proc = None
    else:
        server.stop()  # fast: SIGINT


@pytest.mark.parametrize("how", ["fast", "immediate"])
async def test_pg_server_stopped_while_hundreds_queue(storekit_postgres_server: Any,
                                                      how: str) -> None:
    if not hasattr(storekit_postgres_server, "stop"):
        pytest.skip("needs a local server this test can restart")
    server = storekit_postgres_server
    name = "gaterev_stop"
    async with await aio.create_database(_named(server.url, name), pool=storekit.PoolOptions(
            max_size=4, timeout=60)) as db:
        outcomes: list[Any] = []
        gate = _gate(db)

        async def call(i: int) -> None:
            try:
                async with db.transaction() as tx:
                    row = await tx.get("SELECT pg_sleep(0.05), ? AS i", (i,))
                outcomes.append(row)
            except storekit.StoreError as exc:
                outcomes.append(exc)

        tasks = [asyncio.create_task(call(i)) for i in range(300)]
        await _until(lambda: gate.waiting > 250, "queued")
        try:
            await asyncio.to_thread(_stop, server, how)
            for i, task in enumerate(tasks):  # some give up during the outage
                if i % 5 == 0:
                    task.cancel()
                    await asyncio.sleep(0.001)
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG)
        finally:
            await asyncio.to_thread(server.start)
        assert len(outcomes) + sum(t.cancelled() for t in tasks) == 300
        errors = [o for o in outcomes if not isinstance(o, dict)]
        assert errors
        assert all(isinstance(e, storekit.DatabaseUnavailable | storekit.OperationalError)
                   for e in errors), {type(e).__name__ for e in errors}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG
        while True:  # the pool recovers: a call succeeds again
            try:
                assert await db.get("SELECT 1 AS one") == {"one": 1}
                break
            except storekit.DatabaseUnavailable:
                assert loop.time() < deadline
                await asyncio.sleep(0.1)
        await _all_places_free(db, 4)
        assert await _server_count(server.url, name) <= 4


# SQLite ------------------------------------------------------------------------------


def test_sqlite_gate_times_out_on_a_second_event_loop(tmp_path: Any) -> None:
    """One AsyncDatabase, used from one asyncio.run() and then another. A waiter admitted
    before its deadline leaves the gate's one timer pending; the first loop ended before
    it fired, and on the second loop no waiter ever timed out (no BusyError: a wait
    as long as the holder's)."""

    async def open_db() -> aio.AsyncDatabase:
        db = await aio.open_database(tmp_path / "loops.db", busy_timeout_ms=200)
        await db.exec("CREATE TABLE t (x INTEGER)")
        return db

    async def queue_once(db: aio.AsyncDatabase, expect_busy: bool) -> None:
        gate, held, release = _gate(db), asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t VALUES (1)")
                held.set()
                await release.wait()

        holding = asyncio.create_task(holder())
        await _until(held.is_set, "the holder")
        waiter = asyncio.create_task(db.run("INSERT INTO t VALUES (2)"))
        await _until(lambda: gate.waiting == 1, "queued")
        if expect_busy:  # the holder lets go only once the waiter has given up
            with pytest.raises(storekit.BusyError):
                await asyncio.wait_for(waiter, HANG)
            release.set()
        else:
            release.set()
            await asyncio.wait_for(waiter, HANG)
        await asyncio.wait_for(holding, HANG)

    db = asyncio.run(open_db())
    try:
        asyncio.run(queue_once(db, expect_busy=False))  # leaves the timer pending
        asyncio.run(queue_once(db, expect_busy=True))
        asyncio.run(queue_once(db, expect_busy=False))
    finally:
        asyncio.run(db.close())


@pytest.mark.parametrize("where", ["autocommit", "begin"])
async def test_sqlite_timeout_while_another_program_writes(tmp_path: Any, where: str) -> None:
    """A write waiting (in a thread) behind another program's BEGIN IMMEDIATE, under
    asyncio.timeout(): the timeout is answered while the other program still holds the
    lock. sqlite3's interrupt() does not end a busy handler's sleep, so the cancelled
    task used to wait the whole busy timeout (here 100 s), holding the write gate; now the
    thread waits in short slices and lets go between two. The tasks queued behind it
    are served in order once the other program commits."""
    path = tmp_path / "busy.db"
    async with await aio.open_database(path, busy_timeout_ms=100_000) as db:
        await db.exec("CREATE TABLE t (x INTEGER)")
        gate = _gate(db)
        order: list[int] = []

        async def write(x: int) -> None:
            if where == "begin":
                async with db.transaction() as tx:
                    await tx.run("INSERT INTO t VALUES (?)", (x,))
            else:
                await db.run("INSERT INTO t VALUES (?)", (x,))
            order.append(x)

        proc = await asyncio.to_thread(start_holder, HOLD_UNTIL_TOLD, path,
                                        "INSERT INTO t VALUES (0)", told=True)
        try:
            first = asyncio.create_task(write(1))  # let through, then waits in the thread
            await _until(lambda: gate._free == 0, "the write lock taken")
            queued = []
            for x in (2, 3, 4):
                queued.append(asyncio.create_task(write(x)))
                await _until(lambda: gate.waiting == len(queued), "queued")
            queued[1].cancel()  # leaves the queue
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(first, HANG)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await write(5)  # gives up while queued
        finally:
            await asyncio.to_thread(let_go, proc, HANG)
        await asyncio.wait_for(asyncio.gather(queued[0], queued[2]), HANG)
        assert order == [2, 4]
        rows = await db.all("SELECT x FROM t ORDER BY x")
        assert [r["x"] for r in rows] == [0, 2, 4]
        code = ("import storekit, sys\n"
                "with storekit.create_database(sys.argv[1], busy_timeout_ms=20000) as db:\n"
                "    db.run('INSERT INTO t (x) VALUES (6)')\n")
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code,
                                                        f"sqlite:///{path}"],
                                       timeout=HANG, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        await db.run("INSERT INTO t VALUES (7)")
        assert (await db.get("SELECT count(*) AS n FROM t")) == {"n": 5}


async def test_one_place_taken_by_a_transaction_serves_all_its_calls(
        store_url: str) -> None:
    """A pool of one connection (SQLite: the one write lock) held by a transaction: its
    nested transactions, schema and search calls, notify and listen() must not queue
    behind it (a task holding a place asking for another would wait out the timeout)."""
    from storekit.schema import Column, Table

    kwargs: dict[str, Any] = ({"pool": storekit.PoolOptions(max_size=1, timeout=300)}
                              if store_url.startswith("postgres")
                              else {"busy_timeout_ms": 300_000})
    async with await aio.create_database(store_url, **kwargs) as db:
        async def work() -> None:
            async with db.transaction() as tx:
                await db.create_table(Table("docs", [Column("id", "id"),
                                                     Column("body", "text")]))
                await tx.run("INSERT INTO docs (body) VALUES (?)", ("hello world",))
                async with db.transaction() as inner:
                    await inner.run("INSERT INTO docs (body) VALUES (?)", ("nested",))
                    async with db.transaction():
                        await db.run("INSERT INTO docs (body) VALUES (?)", ("deeper",))
                assert "docs" in await db.tables()
                assert [c.name for c in await db.columns("docs")][:2] == ["id", "body"]
                await db.enable_search("docs", ["body"])
                assert len(await db.search("docs", "hello")) == 1
                rows = [r async for r in db.iter("SELECT body FROM docs ORDER BY id")]
                assert len(rows) == 3
                await db.notify("gaterev", "inside")
                assert await db.atomic(lambda t: t.get("SELECT count(*) AS n FROM docs"))

        await asyncio.wait_for(work(), HANG)
        async with db.listen("gaterev") as sub:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO docs (body) VALUES (?)", ("x",))
                await db.notify("gaterev", "held")
            note = await asyncio.wait_for(sub.get(timeout=HANG), HANG)
            assert note is not None
            assert note.payload == "held"
