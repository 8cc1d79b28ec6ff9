"""Hostile checks of the idle hand-off (writelock.IDLE_S) and of storekit.aio's run_many on
the loop, with real processes, files and signals.

A turn in use (a transaction open, whatever it waits on) is never handed over; two
processes never hold the turn at once; nobody starves when idle hand-offs race new
writers; a stopped or killed process does not hang the others; the lease's thread does
not wake every IDLE_S while nothing can change; a run_many too big for the loop runs off
it. Progress is asserted by coordinated steps; times are upper bounds for "must not hang",
or spans in which a correct lease does nothing at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import storekit
from storekit import aio
from storekit.backends.sqlite import writelock
from storekit.backends.sqlite.aio import MANY_ON_LOOP_ROWS
from storekit.backends.sqlite.writelock import WriteLease
from tests.helpers import wal_file

HOUR_S = 3600.0
BOUND_S = 120.0  # "must not hang"
# A span in which a buggy idle rule would hand the turn over hundreds of times (IDLE_S
# is 0.5 ms) and a correct one never does.
QUIET_S = 0.3

# Opens a transaction of the kind named by argv[2], says so, and keeps it open until told.
IN_TX = r"""
import asyncio, sys, threading, storekit
from storekit import aio
path, mode = sys.argv[1], sys.argv[2]

def wait_for_go():
    print("in tx", flush=True)
    assert sys.stdin.readline().strip() == "go"

if mode.startswith("sync"):
    db = storekit.open_database(path)
    if mode == "sync":
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (1)")
            wait_for_go()
    elif mode == "sync-savepoint":
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (1)")
            with db.transaction() as inner:
                inner.run("INSERT INTO t VALUES (2)")
                with db.transaction():
                    wait_for_go()
    elif mode == "sync-threads":
        # Another thread of the process wants to write meanwhile: it queues on the
        # process's lock, and the turn is still the open transaction's.
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (1)")
            other = threading.Thread(target=db.run, args=("INSERT INTO t VALUES (3)",))
            other.start()
            wait_for_go()
        other.join()
    db.close()
else:
    async def main():
        async with await aio.open_database(path) as db:
            loop = asyncio.get_running_loop()
            async with db.transaction() as tx:
                if mode == "aio-run-many":
                    await tx.run_many("INSERT INTO t VALUES (?)", [(i,) for i in range(16)])
                else:
                    await tx.run("INSERT INTO t VALUES (1)")
                if mode == "aio-savepoint":
                    async with db.transaction() as inner:
                        await inner.run("INSERT INTO t VALUES (2)")
                        await loop.run_in_executor(None, wait_for_go)
                elif mode == "aio-sleeping":
                    # The loop idles in a sleep inside the transaction until told.
                    told = loop.run_in_executor(None, wait_for_go)
                    while not told.done():
                        await asyncio.sleep(0.001)
                else:
                    await loop.run_in_executor(None, wait_for_go)
    asyncio.run(main())
print("committed", flush=True)
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return wal_file(tmp_path / "idle.db")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def drawn(sidecar: str) -> int:
    """Tickets drawn so far on the sidecar (how many turns were queued for)."""
    with open(sidecar, "rb") as f:
        return int.from_bytes(f.read(8), "little")


class Asker:
    """lease.acquire() in a thread, with a generous deadline; `got` once it returns."""

    def __init__(self, lease: WriteLease) -> None:
        self.got: list[bool] = []
        self.thread = threading.Thread(
            target=lambda: self.got.append(lease.acquire(time.monotonic() + BOUND_S)))
        self.thread.start()

    def result(self) -> bool:
        self.thread.join(BOUND_S)
        assert self.got, "acquire() hung"
        return self.got[0]


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


@pytest.mark.parametrize("mode", ["sync", "sync-savepoint", "sync-threads", "aio",
                                  "aio-savepoint", "aio-sleeping", "aio-run-many"])
def test_an_open_transaction_keeps_its_turn(db_path: Path, mode: str) -> None:
    """However long a transaction pauses, and on what, another process queued behind it
    gets the turn only once it has committed."""
    holder = subprocess.Popen([sys.executable, "-c", IN_TX, str(db_path), mode],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sidecar = str(db_path) + "-storekit.lock"
    lease = WriteLease(sidecar, 0.002)  # no stall: the turn or nothing
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "in tx"
        before = drawn(sidecar)
        asker = Asker(lease)
        wait_until(lambda: drawn(sidecar) > before, "the other process to queue")
        time.sleep(QUIET_S)  # hundreds of idle periods: the holder's turn is in use
        assert asker.got == [], f"turn handed over inside a {mode} transaction"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert asker.result() is True
        lease.release(hand_over=True)
        assert holder.stdout.readline().strip() == "committed"
        assert holder.wait(BOUND_S) == 0
    finally:
        lease.close()
        holder.kill()
        holder.communicate()


# Holds a turn by WriteLease directly and checks nobody else holds one: a file created
# with O_EXCL while the turn is held. Some turns are left idle (the idle rule hands them
# on), some are followed at once by the next (the turn is kept), and a second thread of
# the process asks just as the first gives the turn back.
EXCLUSIVE = r"""
import os, sys, threading, time
from storekit.backends.sqlite.writelock import WriteLease
sidecar, flag, rounds, me = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lease = WriteLease(sidecar, 0.002)
serial = threading.Lock()  # callers of a lease are serialised (FairLock in storekit)
overlaps = 0

def writer(k):
    global overlaps
    for i in range(rounds):
        with serial:
            assert lease.acquire(time.monotonic() + 120), "no turn in 120 s"
            try:
                fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
            else:
                os.close(fd)
                os.unlink(flag)
            lease.release()
        pause = (i + me + k) % 4
        if pause:
            time.sleep(pause * 0.0004)  # around IDLE_S: idle hand-offs race the next ask

threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
lease.close()
print(overlaps, flush=True)
"""


def test_two_processes_never_hold_the_turn_at_once(tmp_path: Path) -> None:
    sidecar, flag = str(tmp_path / "x-storekit.lock"), str(tmp_path / "held")
    rounds = 150
    procs = [subprocess.Popen([sys.executable, "-c", EXCLUSIVE, sidecar, flag, str(rounds),
                               str(me)], stdout=subprocess.PIPE, text=True)
             for me in range(3)]
    try:
        outs = [p.communicate(timeout=BOUND_S)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0]
        assert [o.strip() for o in outs] == ["0", "0", "0"]
        assert drawn(sidecar) > 3  # turns did change hands
    finally:
        for p in procs:
            p.kill()
            p.communicate()


# Writes its rows with storekit, a pause around IDLE_S between some of them.
WRITER = r"""
import sys, time, storekit
import storekit.backends.sqlite.backend as backend
backend.STALL_S = 60.0  # progress by turns only, not by stalling the queue
db = storekit.open_database(sys.argv[1], busy_timeout_ms=120_000)
me, rounds = int(sys.argv[2]), int(sys.argv[3])
for i in range(rounds):
    db.run("INSERT INTO t VALUES (?)", [me * 100_000 + i])
    if i % 3:
        time.sleep((i % 3) * 0.0003)
assert not db._backend._lease._stalled
db.close()
"""


def test_idle_hand_offs_racing_new_writers_starve_nobody(db_path: Path) -> None:
    rounds = 200
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), str(me),
                               str(rounds)]) for me in range(3)]
    try:
        assert [p.wait(BOUND_S) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    with storekit.open_database(db_path) as db:
        assert db.get("SELECT COUNT(*) AS n FROM t") == {"n": 3 * rounds}


# Writes once (the turn is then its own), says so, writes again when told.
WRITE_THEN_WAIT = r"""
import sys, storekit
db = storekit.open_database(sys.argv[1], busy_timeout_ms=120_000)
db.run("INSERT INTO t VALUES (1)")
print("wrote", flush=True)
sys.stdin.readline()
db.run("INSERT INTO t VALUES (2)")
print("wrote", flush=True)
"""


def test_a_process_stopped_while_queued_does_not_hang_the_others(db_path: Path) -> None:
    """The holder goes idle and hands its turn to a process that is stopped (SIGSTOP)
    in the queue: writers behind it still write (the queue stalls, SQLite's lock takes
    over), and the stopped process writes once resumed."""
    sidecar = str(db_path) + "-storekit.lock"
    holder = WriteLease(sidecar, 0.002)
    stopped = subprocess.Popen([sys.executable, "-c", WRITE_THEN_WAIT, str(db_path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert stopped.stdout is not None
        assert stopped.stdin is not None
        assert stopped.stdout.readline().strip() == "wrote"
        assert holder.acquire(time.monotonic() + BOUND_S) is True  # its idle turn came
        before = drawn(sidecar)
        stopped.stdin.write("go\n")
        stopped.stdin.flush()
        wait_until(lambda: drawn(sidecar) > before, "the process to queue")
        os.kill(stopped.pid, signal.SIGSTOP)
        holder.release()  # idle, someone queued: the turn goes to the stopped process
        with storekit.open_database(db_path, busy_timeout_ms=60_000) as db:
            db.run("INSERT INTO t VALUES (3)")  # behind a stopped process: stalls, writes
        os.kill(stopped.pid, signal.SIGCONT)
        assert stopped.stdout.readline().strip() == "wrote"
        assert stopped.wait(BOUND_S) == 0
    finally:
        if stopped.poll() is None:
            os.kill(stopped.pid, signal.SIGCONT)
        holder.close()
        stopped.kill()
        stopped.communicate()
    with storekit.open_database(db_path) as db:
        assert db.get("SELECT COUNT(*) AS n FROM t") == {"n": 3}


def test_a_holder_killed_in_a_transaction_passes_the_turn(db_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", IN_TX, str(db_path), "sync"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sidecar = str(db_path) + "-storekit.lock"
    lease = WriteLease(sidecar, 0.002)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "in tx"
        asker = Asker(lease)
        os.kill(holder.pid, signal.SIGKILL)
        assert asker.result() is True  # the kernel dropped the dead holder's locks
        with storekit.open_database(db_path) as db:
            db.run("INSERT INTO t VALUES (9)")  # SQLite's lock went with it too
            assert db.all("SELECT x FROM t") == [{"x": 9}]
        lease.release(hand_over=True)
    finally:
        lease.close()
        holder.kill()
        holder.communicate()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_from_an_idle_holder_gets_the_turn(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of an hour: the parent's idle turn reaches the child only by the idle rule,
    and the parent writes again after the child."""
    monkeypatch.setattr(writelock, "MAX_SLICE_S", HOUR_S)
    monkeypatch.setattr(writelock, "ROUND_S", HOUR_S)
    with storekit.open_database(
            db_path, sqlite=storekit.SqliteOptions(lock_slice_ms=HOUR_S * 1000)) as db:
        db.run("INSERT INTO t VALUES (1)")
        lease = db._backend._lease  # type: ignore[attr-defined]
        assert lease is not None
        assert lease._held
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                db.run("INSERT INTO t VALUES (2)")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        db.run("INSERT INTO t VALUES (3)")
        assert [r["x"] for r in db.all("SELECT x FROM t ORDER BY rowid")] == [1, 2, 3]


def wakeups(thread: threading.Thread) -> int:
    """How often the kernel has put this thread to sleep and woken it (Linux)."""
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc")
@pytest.mark.parametrize("in_use", [False, True])
def test_the_lease_thread_does_not_poll_a_turn_nobody_queues_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_use: bool) -> None:
    """Held with nobody queued, in use (a long transaction) or idle: the thread looks
    less and less often (it had woken every IDLE_S, 2,000 times a second). Someone
    queuing still gets an idle turn (the test above and test_langgraph_sqlite_speed)."""
    monkeypatch.setattr(writelock, "MAX_SLICE_S", HOUR_S)
    monkeypatch.setattr(writelock, "ROUND_S", HOUR_S)
    sidecar = str(tmp_path / "x-storekit.lock")
    lease = WriteLease(sidecar, HOUR_S)
    try:
        assert lease.acquire(time.monotonic() + BOUND_S) is True
        if not in_use:
            lease.release()
        start = wakeups(lease._thread)
        time.sleep(1.0)  # 2,000 periods of IDLE_S
        woke = wakeups(lease._thread) - start
        assert woke < 50, f"{woke} wake-ups in a second with nothing to do"
        # And the turn still goes as it should once someone queues.
        other = WriteLease(sidecar, HOUR_S)
        try:
            asker = Asker(other)
            time.sleep(QUIET_S)
            if in_use:
                assert asker.got == []
                lease.release()
            assert asker.result() is True
            other.release(hand_over=True)
        finally:
            other.close()
    finally:
        lease.close()


@pytest.mark.anyio
async def test_a_failing_row_midway_leaves_nothing_on_the_loop(db_path: Path) -> None:
    """Row 10 of 16 violates a constraint: none of the 16 stay, the transaction goes on."""
    async with await aio.open_database(db_path) as db:
        await db.exec("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        async with db.transaction() as tx:
            await tx.run("INSERT INTO u VALUES (100, 'kept')")
            rows: list[tuple[int, str | None]] = [(i, "x") for i in range(MANY_ON_LOOP_ROWS)]
            rows[9] = (9, None)
            with pytest.raises(storekit.IntegrityError):
                await tx.run_many("INSERT INTO u VALUES (?, ?)", rows)
            assert await tx.get("SELECT COUNT(*) AS n FROM u") == {"n": 1}
            rows[9] = (9, "x")
            assert await tx.run_many("INSERT INTO u VALUES (?, ?)", rows) == MANY_ON_LOOP_ROWS
        assert await db.get("SELECT COUNT(*) AS n FROM u") == {"n": MANY_ON_LOOP_ROWS + 1}


@pytest.mark.anyio
async def test_a_run_many_of_huge_rows_runs_off_the_loop(db_path: Path) -> None:
    """A few rows, but megabytes each: copying them into the file would hold the event
    loop for many milliseconds, so they go to the writer's thread like a long batch."""
    async with await aio.open_database(db_path) as db:
        await db.exec("CREATE TABLE u (id INTEGER PRIMARY KEY, v BLOB, tid INTEGER)")
        backend = db._backend
        loop_thread = threading.get_ident()
        backend._w.conn.create_function(  # type: ignore[attr-defined]
            "tid", 0, threading.get_ident)
        big = b"\x01" * (4 << 20)
        async with db.transaction() as tx:
            await tx.run_many("INSERT INTO u VALUES (?, ?, tid())",
                              [(i, big) for i in range(4)])
            small = [(i, b"x") for i in range(10, 10 + MANY_ON_LOOP_ROWS)]
            await tx.run_many("INSERT INTO u VALUES (?, ?, tid())", small)
        where = {r["id"]: r["tid"] for r in await db.all("SELECT id, tid FROM u")}
        assert all(where[i] != loop_thread for i in range(4)), "huge rows ran on the loop"
        assert all(where[i] == loop_thread for i in range(10, 10 + MANY_ON_LOOP_ROWS))
        assert await db.get("SELECT SUM(length(v)) AS n FROM u WHERE id < 4") == {
            "n": 4 * len(big)}

