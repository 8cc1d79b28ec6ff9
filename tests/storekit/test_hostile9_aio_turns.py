"""storekit.aio on SQLite: every call that runs on the loop takes its turn (_turn), not
only run/get/all: a task looping over iter() or read-only transactions held the loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from storekit import aio
from tests.storekit.test_aio_turns import NO_CHECKPOINT, _others_run_while

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("kind", ["iter", "tx_iter", "readonly_tx", "memory_iter"])
async def test_a_task_looping_over_other_calls_lets_others_run(
        tmp_path: Path, kind: str) -> None:
    db = (await aio.create_memory_database() if kind == "memory_iter" else
          await aio.create_database(f"sqlite:///{tmp_path / 'turns.db'}", sqlite=NO_CHECKPOINT))
    await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    await db.run("INSERT INTO t (v) VALUES ('seed')")

    async def iterate(db: aio.AsyncDatabase, i: int) -> None:
        assert [r async for r in db.iter("SELECT v FROM t")] == [{"v": "seed"}]

    async def readonly_tx(db: aio.AsyncDatabase, i: int) -> None:
        async with db.transaction(readonly=True):
            pass

    try:
        if kind == "tx_iter":
            async with db.transaction() as tx:
                async def in_tx(db: aio.AsyncDatabase, i: int) -> None:
                    assert [r async for r in tx.iter("SELECT v FROM t")] == [{"v": "seed"}]

                await _others_run_while(in_tx, db, 3000)
        else:
            await _others_run_while(readonly_tx if kind == "readonly_tx" else iterate, db, 3000)
    finally:
        await db.close()
