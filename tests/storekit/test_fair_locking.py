"""Fair write-lock hand-off: FIFO between threads, a sidecar lock between processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import storekit
from storekit.backends.sqlite.writelock import MAX_SLICE_S, FairLock, TicketQueue, WriteLease
from tests.helpers import start_holder, wal_file


def test_threads_get_the_lock_in_arrival_order() -> None:
    lock = FairLock()
    assert lock.acquire()
    order: list[int] = []

    def waiter(n: int) -> None:
        assert lock.acquire(timeout=10)
        order.append(n)
        lock.release()

    threads = []
    for n in range(8):
        t = threading.Thread(target=waiter, args=(n,))
        t.start()
        threads.append(t)
        while _queued(lock) < n + 1:  # wait until this one is queued
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join()
    assert order == list(range(8))


def test_fair_lock_timeout_leaves_it_usable() -> None:
    lock = FairLock()
    assert lock.acquire()
    started = time.monotonic()
    assert lock.acquire(timeout=0.1) is False
    assert time.monotonic() - started >= 0.09
    lock.release()
    assert lock.acquire(timeout=0)
    lock.release()
    assert lock.locked() is False


HOLD = """
import sys, time, storekit
db = storekit.open_database(sys.argv[1])
with db.transaction() as tx:
    tx.run("INSERT INTO t VALUES (1)")
    print("holding", flush=True)
    sys.stdin.readline() if sys.argv[2] == "until-told" else time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""
UNTIL_TOLD = "until-told"  # holds until a line (or end of file) on its stdin, however slow


def _holder(path: Path, seconds: float | str, script: str = HOLD) -> subprocess.Popen[str]:
    return start_holder(script, path, seconds, told=seconds == UNTIL_TOLD)


def _let_go(holder: subprocess.Popen[str]) -> None:
    """End an UNTIL_TOLD hold: the transaction commits."""
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return wal_file(tmp_path / "fair.db")


def test_sidecar_turn_is_shared_by_processes(db_path: Path) -> None:
    holder = _holder(db_path, UNTIL_TOLD)
    lease = WriteLease(str(db_path) + "-storekit.lock", 0.002)
    try:
        # The other process is mid-transaction, and hands its turn over when it commits.
        assert lease.acquire(time.monotonic() + 0.2) is False
        _let_go(holder)
        assert lease.acquire(time.monotonic() + 60) is True
        lease.release()
    finally:
        lease.close()
        holder.kill()
        holder.communicate()


QUEUER = """
import sys, time
from storekit.backends.sqlite.writelock import TicketQueue
q = TicketQueue(sys.argv[1])
q.wait_turn()
with open(sys.argv[2], "a") as out:
    out.write(sys.argv[3] + "\\n")
time.sleep(0.01)
q.end_turn()
"""


def _tickets_drawn(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def _queue_behind(sidecar: Path, log: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """Start `count` QUEUER processes, each one queued before the next starts."""
    procs = []
    for n in range(count):
        before = _tickets_drawn(sidecar)
        procs.append(subprocess.Popen([sys.executable, "-c", QUEUER, str(sidecar),
                                       str(log), str(n)]))
        deadline = time.monotonic() + 30
        while _tickets_drawn(sidecar) == before:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    return procs


def test_processes_get_their_turn_in_arrival_order(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "q.lock", tmp_path / "order.txt"
    mine = TicketQueue(str(sidecar))
    mine.wait_turn()
    procs = []
    try:
        procs = _queue_behind(sidecar, log, 6)
        assert not log.exists()  # all of them wait for this process's turn
    finally:
        mine.end_turn()
        for p in procs:
            assert p.wait(30) == 0
        mine.close()
    assert log.read_text().split() == [str(n) for n in range(6)]


def test_a_queued_process_that_dies_does_not_block_the_queue(tmp_path: Path) -> None:
    sidecar, log = tmp_path / "q.lock", tmp_path / "order.txt"
    mine = TicketQueue(str(sidecar))
    mine.wait_turn()
    procs = _queue_behind(sidecar, log, 2)
    procs[0].kill()
    procs[0].wait()
    mine.end_turn()
    assert procs[1].wait(30) == 0
    mine.close()
    assert log.read_text().split() == ["1"]


def test_a_dead_queued_process_does_not_let_the_next_overlap_the_holder(
        tmp_path: Path) -> None:
    sidecar, log = tmp_path / "q.lock", tmp_path / "order.txt"
    mine = TicketQueue(str(sidecar))
    mine.wait_turn()
    procs = _queue_behind(sidecar, log, 2)
    try:
        procs[0].kill()
        procs[0].wait()
        time.sleep(0.3)  # time enough for the survivor to run if it only watched the dead one
        assert not log.exists(), "the survivor started while this process held the turn"
    finally:
        mine.end_turn()
        assert procs[1].wait(30) == 0
        mine.close()
    assert log.read_text().split() == ["1"]


IDLE = """
import sys, time, storekit
db = storekit.open_database(sys.argv[1])
db.run("INSERT INTO t VALUES (1)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_an_idle_process_does_not_keep_its_turn(db_path: Path) -> None:
    idle = _holder(db_path, 30, IDLE)  # wrote once, then stays open and idle
    try:
        with storekit.open_database(db_path) as db:
            db.run("INSERT INTO t VALUES (2)")  # would wait 30 s if the turn were kept
            assert idle.poll() is None
            assert db.get("SELECT COUNT(*) AS n FROM t") == {"n": 2}
    finally:
        idle.kill()
        idle.communicate()


def test_lease_timeout_leaves_it_usable(db_path: Path) -> None:
    holder = _holder(db_path, UNTIL_TOLD)
    lease = WriteLease(str(db_path) + "-storekit.lock", 0.002)
    try:
        for _ in range(3):
            assert lease.acquire(time.monotonic() + 0.05) is False
        _let_go(holder)
        holder.communicate()
        assert lease.acquire(time.monotonic() + 60) is True
        lease.release()
        assert lease.acquire(time.monotonic() + 60) is True  # again, within or after the slice
        lease.release()
    finally:
        lease.close()
        holder.kill()


def test_busy_error_after_the_timeout_names_the_file(db_path: Path) -> None:
    holder = _holder(db_path, UNTIL_TOLD)
    try:
        options = storekit.SqliteOptions(busy_timeout_ms=300)
        with storekit.open_database(db_path, sqlite=options) as db:
            started = time.monotonic()
            # The other process holds on until told: the write gave up, not waited it out.
            # (No upper bound on the time taken: that would measure the machine's load.)
            with pytest.raises(storekit.BusyError, match=str(db_path)):
                db.run("INSERT INTO t VALUES (2)")
            assert time.monotonic() - started >= 0.25  # it did wait, at least that long
            assert db.settings["busy_timeout"] == 300
    finally:
        holder.kill()
        holder.communicate()


PLAIN = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE"); c.execute("INSERT INTO t VALUES (7)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
committing = time.monotonic()
c.execute("COMMIT")
print(committing, flush=True)
"""


def test_a_program_that_ignores_the_sidecar_is_waited_for(db_path: Path) -> None:
    holder = _holder(db_path, 0.5, PLAIN)
    try:
        with storekit.open_database(db_path) as db:
            db.run("INSERT INTO t VALUES (8)")  # SQLite's busy handler covers the foreign writer
            done = time.monotonic()
            assert sorted(r["x"] for r in db.all("SELECT x FROM t")) == [7, 8]
    finally:
        out, _ = holder.communicate()
    # It waited for the other program's commit (one monotonic clock for both processes on
    # Linux), however long the machine took to get there.
    assert float(out) < done


@pytest.mark.parametrize("fair", [True, False])
def test_both_modes_serve_concurrent_threads(db_path: Path, fair: bool) -> None:
    options = storekit.SqliteOptions(fair_locking=fair)
    errors: list[BaseException] = []
    with storekit.open_database(db_path, sqlite=options) as db:

        def work(n: int) -> None:
            try:
                for i in range(100):
                    with db.transaction() as tx:
                        tx.get("SELECT COUNT(*) AS c FROM t")
                        tx.run("INSERT INTO t VALUES (?)", (n * 1000 + i,))
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert db.get("SELECT COUNT(*) AS c FROM t") == {"c": 600}
    sidecar = Path(str(db_path) + "-storekit.lock")
    assert sidecar.exists() is fair


def test_a_lone_writer_keeps_its_turn(db_path: Path) -> None:
    sidecar = Path(str(db_path) + "-storekit.lock")
    # The first slice is at most MAX_SLICE_S; each extension lasts lock_slice_ms. A short
    # slice would let a writer descheduled by a loaded machine for two slices look idle,
    # and an idle process rightly ends its turn: a new ticket that is no hand-off.
    options = storekit.SqliteOptions(lock_slice_ms=600_000)
    with storekit.open_database(db_path, sqlite=options) as db:
        db.run("INSERT INTO t VALUES (0)")
        drawn = _tickets_drawn(sidecar)
        until = time.monotonic() + 10 * MAX_SLICE_S  # well past the first slice
        while time.monotonic() < until:
            db.run("INSERT INTO t VALUES (1)")
        # Nobody else queued, so the slice that ended was extended: no new ticket.
        assert _tickets_drawn(sidecar) == drawn


BUSY = """
import sys, time, storekit
db = storekit.open_database(sys.argv[1])
db.run("INSERT INTO t VALUES (1)")
print("holding", flush=True)
until = time.monotonic() + float(sys.argv[2])
while time.monotonic() < until:
    db.run("INSERT INTO t VALUES (1)")
"""


def test_a_busy_process_hands_over_to_one_that_queues(db_path: Path) -> None:
    busy = _holder(db_path, 3600, BUSY)  # writes back to back until killed, never idle
    try:
        options = storekit.SqliteOptions(busy_timeout_ms=2000)
        with storekit.open_database(db_path, sqlite=options) as db:
            for i in range(20):
                db.run("INSERT INTO t VALUES (?)", (100 + i,))  # BusyError if starved
            assert busy.poll() is None  # the other process was still writing throughout
    finally:
        busy.kill()
        busy.communicate()


def _queued(lock: FairLock) -> int:
    """Waiters in the queue: the nodes not done, back from the tail."""
    count, node = 0, lock._tail
    while node is not None and not node.done:
        count, node = count + 1, node.prev
    return count - (lock._node is not None)
