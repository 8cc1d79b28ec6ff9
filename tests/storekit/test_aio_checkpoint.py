"""storekit.aio on SQLite: a WAL checkpoint due while tasks of the process wait for the
writer runs beside them, not in the turn (a PASSIVE checkpoint does not block writers).

The checkpoint is held inside its thread by an event, so what the tasks can do meanwhile
is decided by the code, not by the machine's speed: in the turn, no task could commit
until it is let go.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from storekit import SqliteOptions, aio
from storekit.backends.sqlite.checkpoint import Checkpointer

pytestmark = pytest.mark.anyio
WAIT_S = 20.0  # a guard against hanging only


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """(started, let_go): checkpoints wait for let_go, then run as usual."""
    started, let_go = threading.Event(), threading.Event()
    run = Checkpointer.run

    def held_run(self: Checkpointer, *, in_turn: bool) -> None:
        started.set()
        let_go.wait(WAIT_S)
        run(self, in_turn=in_turn)

    monkeypatch.setattr(Checkpointer, "run", held_run)
    return started, let_go


async def test_tasks_commit_while_a_checkpoint_copies_the_wal_back(
        tmp_path: Path, held: tuple[threading.Event, threading.Event]) -> None:
    started, let_go = held
    db = await aio.create_database(f"sqlite:///{tmp_path / 'c.db'}",
                                   sqlite=SqliteOptions(wal_autocheckpoint=10))
    await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, task INT, v TEXT)")
    committed: list[int] = []
    arrived: list[int] = []
    stop = False

    async def writer(task: int) -> None:
        arrived.append(task)
        while not stop:
            async with db.transaction() as tx:
                rid = (await tx.run("INSERT INTO t (task, v) VALUES (?, ?)",
                                    (task, "x" * 2000))).last_id
            committed.append(rid)

    async def commits_while_held() -> None:
        while not started.is_set():
            await asyncio.sleep(0.001)
        during = len(committed)
        while len(committed) < during + 100:
            await asyncio.sleep(0.001)

    # A transaction that never waits never lets another task run: the tasks queue for the
    # writer first, as agents that await other work do, so that others wait at each commit.
    async with db.transaction() as tx:
        await tx.run("INSERT INTO t (task, v) VALUES (-1, 'first')")
        tasks = [asyncio.create_task(writer(i)) for i in range(20)]
        while len(arrived) < 20:
            await asyncio.sleep(0)
    try:
        await asyncio.wait_for(commits_while_held(), WAIT_S)
        assert not let_go.is_set()
    finally:
        let_go.set()
        stop = True
        await asyncio.gather(*tasks)
    # Once let go, it and the short tail it leaves in a later turn run; nothing is lost.
    for task in range(20):
        async with db.transaction() as tx:
            committed.append((await tx.run("INSERT INTO t (task, v) VALUES (?, 'y')",
                                           (task,))).last_id)
    rows = await db.all("SELECT k FROM t WHERE task >= 0 ORDER BY k")
    assert [r["k"] for r in rows] == sorted(committed)
    await db.close()


async def test_with_no_task_waiting_the_checkpoint_runs_in_the_turn(
        tmp_path: Path, held: tuple[threading.Event, threading.Event]) -> None:
    """One task alone: as SQLite's own checkpoint, in the turn (its next write waits)."""
    started, let_go = held
    db = await aio.create_database(f"sqlite:///{tmp_path / 'c.db'}",
                                   sqlite=SqliteOptions(wal_autocheckpoint=10))
    await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    order: list[Any] = []

    async def scene() -> None:
        last: asyncio.Task[Any] | None = None
        while not started.is_set():  # one write at a time: none waits when one commits
            last = asyncio.create_task(db.run("INSERT INTO t (v) VALUES (?)", ("x" * 2000,)))
            while not (last.done() or started.is_set()):
                await asyncio.sleep(0.001)
        write = asyncio.create_task(db.run("INSERT INTO t (v) VALUES ('after')"))
        await asyncio.sleep(0.05)
        order.append(write.done())
        let_go.set()
        await asyncio.gather(write, *([last] if last else []))

    await asyncio.wait_for(scene(), WAIT_S)
    assert order == [False]
    assert await db.get("SELECT count(*) AS n FROM t WHERE v = 'after'") == {"n": 1}
    await db.close()
