"""Hostile cases for storekit.aio on SQLite's turn yield (_turn) and outside checkpoint:
a cancellation at every await of autocommit run(), a transaction, atomic(), iter(), on
file and memory databases, must leave the write lock free for the next task and for
another process, and every acknowledged write present; close() while a checkpoint runs
outside the turn."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import storekit.backends.sqlite.aio as sqlite_aio
from storekit import SqliteOptions, aio
from storekit.backends.sqlite.checkpoint import Checkpointer

pytestmark = pytest.mark.anyio
WAIT_S = 20.0  # a guard against hanging only
OTHER_PROCESS = """
import sys
from storekit import SqliteOptions, create_database
db = create_database(sys.argv[1], sqlite=SqliteOptions(busy_timeout_ms=10000))
db.run("INSERT INTO t (k, v) VALUES (?, 'other')", (int(sys.argv[2]),))
db.close()
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def always_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement yields first (_turn), so each step can be cancelled there."""
    monkeypatch.setattr(sqlite_aio, "TURN_S", -1.0)


Op = Callable[[aio.AsyncDatabase, int], Awaitable[Any]]


async def _run(db: aio.AsyncDatabase, k: int) -> None:
    await db.run("INSERT INTO t (k, v) VALUES (?, 'run')", (k,))


async def _tx(db: aio.AsyncDatabase, k: int) -> None:
    async with db.transaction() as tx:
        await tx.get("SELECT count(*) AS n FROM t")
        await tx.run("INSERT INTO t (k, v) VALUES (?, 'tx')", (k,))
        await tx.run("UPDATE t SET v = v WHERE k = ?", (k,))


async def _atomic(db: aio.AsyncDatabase, k: int) -> None:
    async def body(tx: Any) -> None:
        await tx.run("INSERT INTO t (k, v) VALUES (?, 'atomic')", (k,))
        await tx.all("SELECT k FROM t WHERE k < 0")

    await db.atomic(body)


async def _iter(db: aio.AsyncDatabase, k: int) -> None:
    async with db.transaction() as tx:
        async for _row in tx.iter("SELECT k FROM t"):
            pass
        await tx.run("INSERT INTO t (k, v) VALUES (?, 'iter')", (k,))


OPS = {"run": _run, "tx": _tx, "atomic": _atomic, "iter": _iter}


async def _cancel_at_every_step(db: aio.AsyncDatabase, op: Op, url: str | None,
                                timeouts: bool) -> None:
    acked: set[int] = set()
    k = 0
    for steps in range(12):
        k += 1

        async def go(key: int) -> None:
            await op(db, key)
            acked.add(key)

        if timeouts:  # where the timeout lands depends on timing: somewhere in the call
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(go(k), steps * 0.0002)
        else:
            task = asyncio.create_task(go(k))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The next task writes, then another process does.
        k += 1
        await asyncio.wait_for(go(k), WAIT_S)
        if url is not None:
            k += 1
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", OTHER_PROCESS, url, str(k))
            assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
            acked.add(k)
    present = {r["k"] for r in await db.all("SELECT k FROM t")}
    assert acked <= present
    assert await db.get("PRAGMA integrity_check") == {"integrity_check": "ok"}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("timeouts", [False, True])
async def test_cancelled_at_the_turn_leaves_the_write_lock(
        tmp_path: Path, always_yield: None, name: str, timeouts: bool) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = await aio.create_database(url, sqlite=SqliteOptions(wal_autocheckpoint=2))
    try:
        await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await _cancel_at_every_step(db, OPS[name], url, timeouts)
    finally:
        await db.close()


@pytest.mark.parametrize("name", sorted(OPS))
async def test_cancelled_at_the_turn_on_a_memory_database(always_yield: None,
                                                         name: str) -> None:
    db = await aio.create_memory_database()
    try:
        await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await _cancel_at_every_step(db, OPS[name], None, False)
    finally:
        await db.close()


async def test_close_while_a_checkpoint_runs_outside_the_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, let_go = threading.Event(), threading.Event()
    run = Checkpointer.run
    outside: list[bool] = []

    def held_run(self: Checkpointer, *, in_turn: bool) -> None:
        if not in_turn:
            outside.append(True)
            started.set()
            let_go.wait(WAIT_S)
        run(self, in_turn=in_turn)

    monkeypatch.setattr(Checkpointer, "run", held_run)
    before = set(threading.enumerate())  # other tests' threads are not this one's
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db = await aio.create_database(url, sqlite=SqliteOptions(wal_autocheckpoint=2))
    await db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    acked: set[int] = set()

    async def writer(i: int) -> None:
        for n in range(50):
            k = i * 1000 + n
            await db.run("INSERT INTO t (k, v) VALUES (?, ?)", (k, "x" * 3000))
            acked.add(k)
            if started.is_set():
                return

    await asyncio.wait_for(asyncio.gather(*(writer(i) for i in range(20))), WAIT_S)
    assert outside, "a checkpoint ran outside the turn"
    closing = asyncio.ensure_future(db.close())
    await asyncio.sleep(0.2)
    let_go.set()
    await asyncio.wait_for(closing, WAIT_S)
    names = [t.name for t in set(threading.enumerate()) - before]
    assert not [n for n in names if n.startswith("storekit-aio")], names
    check = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
         "print(c.execute('PRAGMA integrity_check').fetchone()[0]);"
         "print(*[r[0] for r in c.execute('SELECT k FROM t')])", str(tmp_path / "c.db")],
        capture_output=True, text=True, timeout=WAIT_S, check=True)
    lines = check.stdout.splitlines()
    assert lines[0] == "ok"
    assert acked <= {int(k) for k in lines[1].split()}


WRITER_PROCESS = r"""
import asyncio, sys
from storekit import SqliteOptions, aio
from storekit.backends.sqlite.checkpoint import Checkpointer

run = Checkpointer.run

def told_run(self, *, in_turn):
    sys.stdout.write(f"checkpoint {in_turn}\n")  # one write: lines stay whole
    sys.stdout.flush()
    run(self, in_turn=in_turn)

Checkpointer.run = told_run

async def main(url, base, tasks, count):
    db = await aio.create_database(url, sqlite=SqliteOptions(wal_autocheckpoint=4))

    async def writer(i):
        for n in range(count):
            k = base + i * 10000 + n
            if n % 3:
                await db.run("INSERT INTO t (k, v) VALUES (?, ?)", (k, "x" * 1500))
            else:
                async with db.transaction() as tx:
                    await tx.run("INSERT INTO t (k, v) VALUES (?, ?)", (k, "y" * 1500))
            sys.stdout.write(f"acked {k}\n")
            sys.stdout.flush()

    await asyncio.gather(*(writer(i) for i in range(tasks)))
    await db.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


def _acked(out: str) -> set[int]:
    return {int(line.split()[1]) for line in out.splitlines() if line.startswith("acked ")}


def _check_file(path: Path, acked: set[int]) -> None:
    check = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
         "print(c.execute('PRAGMA integrity_check').fetchone()[0]);"
         "print(*[r[0] for r in c.execute('SELECT k FROM t')])", str(path)],
        capture_output=True, text=True, timeout=WAIT_S, check=True)
    lines = check.stdout.splitlines()
    assert lines[0] == "ok"
    assert acked <= {int(k) for k in lines[1].split()}


def test_processes_of_tasks_lose_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                    "c.execute('PRAGMA journal_mode=WAL');"
                    "c.execute('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)')", str(path)],
                   check=True, timeout=WAIT_S)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, url, str(p * 10**6),
                               "30", "40"], stdout=subprocess.PIPE, text=True)
             for p in range(3)]
    acked: set[int] = set()
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            acked |= _acked(out)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert len(acked) == 3 * 30 * 40
    _check_file(path, acked)


def test_killed_during_a_checkpoint_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                    "c.execute('PRAGMA journal_mode=WAL');"
                    "c.execute('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)')", str(path)],
                   check=True, timeout=WAIT_S)
    acked: set[int] = set()
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, url,
                                 str(round_ * 10**6), "30", "1000"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        seen = 0
        try:
            seen = _read_until_killed(proc, proc.stdout, acked, round_)
        finally:
            proc.kill()
        out, _ = proc.communicate(timeout=WAIT_S)
        acked |= _acked(out)
        assert seen > round_, "an outside checkpoint ran"
        _check_file(path, acked)


def _read_until_killed(proc: subprocess.Popen[str], stdout: Any, acked: set[int],
                       round_: int) -> int:
    """Read the writer's lines; SIGKILL it as its (round_+1)th outside checkpoint starts."""
    seen = 0
    for line in stdout:
        if line.startswith("acked "):
            acked.add(int(line.split()[1]))
        elif line.startswith("checkpoint False"):
            seen += 1
            if seen > round_:  # a later outside checkpoint each round
                proc.kill()
                break
    return seen
