"""storekit.aio on SQLite: close() while tasks are suspended inside a call that holds a
connection (at _turn's yield, in a transaction, in iter()). close() closes the connections
in a thread; a task resuming meanwhile must not use them (it crashed the process: a
statement on the loop while another thread closed its connection), but get StoreError."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import storekit.backends.sqlite.aio as sqlite_aio
from storekit import StoreError, aio

pytestmark = pytest.mark.anyio
WAIT_S = 20.0  # a guard against hanging only


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_task_resuming_while_close_runs_gets_store_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_aio, "TURN_S", -1.0)  # every statement yields first
    in_close, let_go = threading.Event(), threading.Event()
    real_close = sqlite_aio.AsyncSqliteBackend._close

    def held_close(self: Any) -> None:
        in_close.set()
        let_go.wait(WAIT_S)  # close() has begun, the connections are still open
        real_close(self)

    monkeypatch.setattr(sqlite_aio.AsyncSqliteBackend, "_close", held_close)
    db = await aio.create_database(f"sqlite:///{tmp_path / 'c.db'}")
    await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    await db.run("INSERT INTO t (v) VALUES ('a')")
    outcomes: dict[str, str] = {}
    ready, go = asyncio.Event(), asyncio.Event()

    async def note(name: str, call: Any) -> None:
        try:
            await call
            outcomes[name] = "ran"
        except StoreError:
            outcomes[name] = "StoreError"

    async def in_tx() -> None:
        async with db.transaction() as tx:
            await tx.run("INSERT INTO t (v) VALUES ('b')")
            ready.set()
            await go.wait()
            await note("tx.run", tx.run("INSERT INTO t (v) VALUES ('c')"))

    async def autocommit() -> None:
        await go.wait()
        await note("run", db.run("INSERT INTO t (v) VALUES ('d')"))

    async def reading() -> None:
        await go.wait()
        await note("get", db.get("SELECT count(*) AS n FROM t"))

    tasks = [asyncio.create_task(f()) for f in (in_tx, autocommit, reading)]
    await ready.wait()
    # The tasks wake first (FIFO) and enter their calls, which yield (TURN_S): close()
    # then runs to its thread, and the tasks resume inside their calls.
    go.set()
    closing = asyncio.create_task(db.close())
    await asyncio.wait_for(asyncio.to_thread(in_close.wait, WAIT_S), WAIT_S)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S)
    let_go.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert [r for r in results if r is not None and not isinstance(r, StoreError)] == []
    assert outcomes == {"tx.run": "StoreError", "run": "StoreError", "get": "StoreError"}


RACE = r"""
import asyncio, sys
import storekit.backends.sqlite.aio as sqlite_aio
from storekit import SqliteOptions, StoreError, aio

if sys.argv[2] == "yield":
    sqlite_aio.TURN_S = -1.0

async def main(folder):
    for rnd in range(20):
        db = await aio.create_database(f"sqlite:///{folder}/c{rnd}.db",
                                       sqlite=SqliteOptions(wal_autocheckpoint=2))
        await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")

        async def w(i):
            try:
                while True:
                    if i % 3 == 0:
                        await db.run("INSERT INTO t (v) VALUES ('x')")
                    elif i % 3 == 1:
                        async with db.transaction() as tx:
                            await tx.run("INSERT INTO t (v) VALUES ('y')")
                            await tx.get("SELECT count(*) FROM t")
                    else:
                        async for _ in db.iter("SELECT k FROM t"):
                            pass
            except StoreError:
                return

        tasks = [asyncio.create_task(w(i)) for i in range(9)]
        await asyncio.sleep(0.01 + rnd * 0.001)
        await db.close()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    print("done")

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("turns", ["yield", "as_is"])
def test_close_among_busy_tasks_does_not_crash(tmp_path: Path, turns: str) -> None:
    done = subprocess.run([sys.executable, "-c", RACE, str(tmp_path), turns],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "done"
