"""Many tasks waiting for one resource: storekit.aio's Gate (storekit/aio_gate.py), the
queue for SQLite's write connection and for a pooled PostgreSQL connection.

A task keeps its place however long it waits: it is admitted in arrival order, and a
wait for a busy pool past a second neither rejoins the queue at the back nor opens a
probe connection. Asserted: orders, outcomes and counts; the clock only as an upper
bound (a wait must end) or a lower bound (a wait must last past one second).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import storekit
from storekit import aio
from storekit.aio_gate import Gate
from storekit.backends.postgres.aio import POOL_MAX_SIZE

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _queue(gate: Gate, names: list[str], order: list[str]) -> dict[str, asyncio.Task[Any]]:
    """One task per name, each queued at the gate (in that order) before the next starts."""

    async def waiter(name: str) -> None:
        if await gate.acquire():
            order.append(name)

    tasks = {}
    for name in names:
        tasks[name] = asyncio.create_task(waiter(name))
        while gate.waiting < len(tasks):
            await asyncio.sleep(0)
    return tasks


async def test_the_gate_admits_in_arrival_order_size_at_a_time() -> None:
    gate = Gate(2, timeout=60)
    assert gate.try_acquire()
    assert gate.try_acquire()
    assert not gate.try_acquire()
    order: list[str] = []
    tasks = await _queue(gate, [f"t{i}" for i in range(50)], order)
    gate.release()
    gate.release()
    while len(order) < 50:
        await asyncio.sleep(0)
        if order:
            gate.release()  # each admitted task hands its place on
    await asyncio.wait_for(asyncio.gather(*tasks.values()), 30)
    assert order == [f"t{i}" for i in range(50)]


async def test_a_cancelled_waiter_leaves_the_queue_and_leaks_no_place() -> None:
    gate = Gate(1, timeout=60)
    assert gate.try_acquire()
    order: list[str] = []
    tasks = await _queue(gate, ["a", "b", "c"], order)
    tasks["b"].cancel()
    await asyncio.sleep(0)
    for _ in range(2):
        gate.release()
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(tasks["a"], tasks["c"]), 30)
    assert tasks["b"].cancelled()
    assert order == ["a", "c"]
    gate.release()
    assert gate.try_acquire()  # exactly one place, free again
    assert not gate.try_acquire()


async def test_a_waiter_admitted_as_it_is_cancelled_passes_its_place_on() -> None:
    gate = Gate(1, timeout=60)
    assert gate.try_acquire()
    order: list[str] = []
    tasks = await _queue(gate, ["a", "b"], order)
    gate.release()  # a is admitted: its future is set, its task not yet resumed
    tasks["a"].cancel()
    await asyncio.wait_for(tasks["b"], 30)
    assert tasks["a"].cancelled()
    assert order == ["b"]
    gate.release()
    assert gate.try_acquire()
    assert not gate.try_acquire()


async def test_every_waiter_past_its_deadline_gives_up_and_later_ones_still_wait() -> None:
    gate = Gate(1, timeout=0.05)
    assert gate.try_acquire()
    early = [asyncio.create_task(gate.acquire()) for _ in range(100)]
    assert await asyncio.wait_for(asyncio.gather(*early), 30) == [False] * 100
    late = asyncio.create_task(gate.acquire())
    while gate.waiting == 0 or late.done():
        await asyncio.sleep(0)
    gate.release()
    assert await asyncio.wait_for(late, 30) is True
    gate.release()
    assert gate.try_acquire()


async def test_sqlite_tasks_take_the_write_lock_in_arrival_order(tmp_path: Any) -> None:
    async with await aio.open_database(tmp_path / "order.db") as db:
        await db.exec("CREATE TABLE t (n INTEGER)")
        order: list[int] = []

        async def write(n: int) -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t (n) VALUES (?)", (n,))
                order.append(n)
                await asyncio.sleep(0)  # let the others queue behind this one

        await asyncio.wait_for(asyncio.gather(*(write(n) for n in range(300))), 60)
        assert order == list(range(300))
        assert await db.get("SELECT count(*) AS n FROM t") == {"n": 300}


async def test_postgres_a_waiter_past_a_second_keeps_its_place(
        storekit_postgres_url: str) -> None:
    """A pool of one, held for over a second: a task that waited longer than a second is
    still served before one that came later (it used to give up its place after a second,
    probe the server, and queue again at the back)."""
    async with await aio.create_database(storekit_postgres_url, pool=storekit.PoolOptions(
            min_size=1, max_size=1, timeout=60)) as db:
        order: list[str] = []
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with db.transaction() as tx:
                await tx.get("SELECT 1 AS one")
                holding.set()
                await release.wait()

        async def waiter(name: str) -> None:
            await db.get("SELECT 1 AS one")
            order.append(name)

        held = asyncio.create_task(holder())
        await holding.wait()
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(waiter("first"))
        await asyncio.sleep(0.4)
        second = asyncio.create_task(waiter("second"))
        while loop.time() - started < 1.3:  # past the first one's second of waiting
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(asyncio.gather(held, first, second), 60)
        assert order == ["first", "second"]


async def test_postgres_a_thousand_tasks_on_a_small_pool_lose_nothing(
        storekit_postgres_url: str) -> None:
    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url, prefix="many") as url:
        async with await aio.create_database(url, pool=storekit.PoolOptions(
                max_size=3, timeout=120)) as db:
            await db.exec("CREATE TABLE counters (id bigint PRIMARY KEY, n bigint)")
            await db.run_many("INSERT INTO counters (id, n) VALUES (?, 0)",
                              [(i,) for i in range(1000)])

            async def bump(tx: aio.AsyncTransaction, i: int) -> None:
                row = await tx.get("SELECT n FROM counters WHERE id = ?", (i,))
                assert row is not None
                await tx.run("UPDATE counters SET n = ? WHERE id = ?", (row["n"] + 1, i))

            async def agent(i: int) -> None:
                for _ in range(2):
                    await db.atomic(bump, i, retries=1000)

            await asyncio.wait_for(asyncio.gather(*(agent(i) for i in range(1000))), 300)
            assert await db.get("SELECT count(*) AS c, min(n) AS lo, max(n) AS hi"
                                " FROM counters") == {"c": 1000, "lo": 2, "hi": 2}


async def test_postgres_pool_defaults_to_a_few_connections_for_one_event_loop(
        storekit_postgres_url: str) -> None:
    async with await aio.create_database(storekit_postgres_url) as db:
        assert db.settings["pool_max_size"] == POOL_MAX_SIZE == 4
    async with await aio.create_database(storekit_postgres_url, busy_timeout_ms=100) as db:
        assert db.settings["pool_max_size"] == 4
        assert db.settings["lock_timeout"] == "100ms"
    pool = storekit.PoolOptions(max_size=12)
    async with await aio.create_database(storekit_postgres_url, pool=pool) as db:
        assert db.settings["pool_max_size"] == 12  # an explicit pool is taken as given
