"""storekit.aio on SQLite runs short statements on the event loop, where they never
suspend the task: a task looping over them would keep every other task waiting until it
is done. After TURN_S without a turn for others, the next statement yields first.

Asserted: that other tasks run while one loops, with WAL checkpoints (which yield, in a
thread) effectively off; the count is a lower bound that grows with the time the loop
takes, so a slow machine gives a lower bound it also meets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from storekit import SqliteOptions, aio

pytestmark = pytest.mark.anyio
NO_CHECKPOINT = SqliteOptions(wal_autocheckpoint=1_000_000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _others_run_while(loop_body: Callable[[aio.AsyncDatabase, int], Awaitable[None]],
                            db: aio.AsyncDatabase, n: int) -> None:
    turns = 0
    stop = False

    async def other() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    witness = asyncio.create_task(other())
    await asyncio.sleep(0)
    seen, started = turns, time.monotonic()
    for i in range(n):
        await loop_body(db, i)
    elapsed = time.monotonic() - started
    during = turns - seen
    stop = True
    await witness
    # One turn per TURN_S at least; asserted: one per half a second of the loop.
    assert during >= 1 + int(elapsed / 0.5), (during, elapsed)


@pytest.mark.parametrize("kind", ["autocommit", "transaction", "read"])
async def test_a_task_looping_over_statements_lets_others_run(
        tmp_path: Path, kind: str) -> None:
    db = await aio.create_database(f"sqlite:///{tmp_path / 'turns.db'}",
                                   sqlite=NO_CHECKPOINT)
    await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    await db.run("INSERT INTO t (v) VALUES ('seed')")

    async def autocommit(db: aio.AsyncDatabase, i: int) -> None:
        await db.run("INSERT INTO t (v) VALUES (?)", (f"row {i}",))

    async def read(db: aio.AsyncDatabase, i: int) -> None:
        assert await db.get("SELECT v FROM t WHERE k = 1") == {"v": "seed"}

    try:
        if kind == "transaction":
            async with db.transaction() as tx:
                async def in_tx(db: aio.AsyncDatabase, i: int) -> None:
                    await tx.run("INSERT INTO t (v) VALUES (?)", (f"row {i}",))

                await _others_run_while(in_tx, db, 3000)
        else:
            await _others_run_while(autocommit if kind == "autocommit" else read, db, 3000)
    finally:
        await db.close()
