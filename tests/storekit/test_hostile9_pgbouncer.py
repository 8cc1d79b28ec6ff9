"""Hostile cases for the Flush-free pipeline exit behind PgBouncer (pipeline.py): failing
statements, cancellations, transactions and run_many through a relay that holds back a
Flush following a Sync. After each, another client must still get the one server
connection."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from storekit import StoreError, aio, create_database
from tests.storekit.test_pgbouncer_flush import (
    HOLD_S,
    POOLED,
    WAIT_S,
    FlushHolder,
    _within,
    one_server,
    relayed,
)

pytestmark = [pytest.mark.postgres]
__all__ = ["one_server", "relayed"]

BAD = [
    ("INSERT INTO u VALUES (?)", (1,)),  # unique violation
    ("SELEC 1", None),  # syntax error
    ("SELECT ?::int AS x", ("nope",)),  # bad parameter
    ("SELECT ? AS x", (1, 2)),  # wrong parameter count (refused before sending)
]


def test_failing_statements_leave_the_server_connection(
        relayed: tuple[str, FlushHolder]) -> None:
    url, holder = relayed
    first, second = create_database(url, pool=POOLED), create_database(url, pool=POOLED)
    try:
        first.run("CREATE TABLE u (k int PRIMARY KEY)")
        first.run("INSERT INTO u VALUES (?)", (1,))
        for sql, params in BAD:
            with pytest.raises(StoreError):
                first.run(sql, params)
            time.sleep(HOLD_S * 2)
            assert _within(partial(second.get, "SELECT count(*) AS n FROM u")) == {"n": 1}
        with pytest.raises(StoreError), first.transaction() as tx:
            tx.run("INSERT INTO u VALUES (?)", (2,))
            tx.run_many("INSERT INTO u VALUES (?)", [(3,), (1,)])
        time.sleep(HOLD_S * 2)
        assert _within(partial(second.get, "SELECT count(*) AS n FROM u")) == {"n": 1}
        assert first.run_many("INSERT INTO u VALUES (?)", [(5,), (6,)]) == 2
        time.sleep(HOLD_S * 2)
        assert _within(partial(second.get, "SELECT count(*) AS n FROM u")) == {"n": 3}
        assert holder.held == 0
    finally:
        first.close()
        second.close()


def test_async_failures_and_cancellations_leave_the_server_connection(
        relayed: tuple[str, FlushHolder]) -> None:
    url, holder = relayed

    async def check(second: aio.AsyncDatabase, n: int) -> None:
        await asyncio.sleep(HOLD_S * 2)
        row = await asyncio.wait_for(second.get("SELECT count(*) AS n FROM u"), WAIT_S)
        assert row == {"n": n}

    async def main() -> None:
        first = await aio.create_database(url, pool=POOLED)
        second = await aio.create_database(url, pool=POOLED)
        try:
            await first.run("CREATE TABLE u (k int PRIMARY KEY)")
            await first.run("INSERT INTO u VALUES (?)", (1,))
            for sql, params in BAD:
                with pytest.raises(StoreError):
                    await first.run(sql, params)
                await check(second, 1)
            with pytest.raises(StoreError):
                async with first.transaction() as tx:
                    await tx.run("INSERT INTO u VALUES (?)", (2,))
                    await tx.run_many("INSERT INTO u VALUES (?)", [(3,), (1,)])
            await check(second, 1)
            assert await first.run_many("INSERT INTO u VALUES (?)", [(5,), (6,)]) == 2
            await check(second, 3)
            for delay in (0, 0.001, 0.005, 0.02):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(first.run("SELECT pg_sleep(0.2)"), delay)
                await check(second, 3)
                task = asyncio.create_task(first.run("INSERT INTO u VALUES (?)", (100,)))
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    await task
                    await first.run("DELETE FROM u WHERE k = 100")
                except asyncio.CancelledError:
                    await first.run("DELETE FROM u WHERE k = 100")
                await check(second, 3)
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
    assert holder.held == 0
