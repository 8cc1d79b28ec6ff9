"""Nothing wedged: exceptions at every wait, a paused process, a fork, a half-read iter.

Real processes, signals and files; timeouts are upper bounds for "must not hang" only.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

import storekit
from storekit.testing import isolated_schema
from tests.helpers import start_holder, wal_file

HOLD_TX = """
import sys, time, storekit
db = storekit.open_database(sys.argv[1])
with db.transaction() as tx:
    tx.run("INSERT INTO t VALUES (-1)")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""

HOLD_PLAIN = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE"); c.execute("INSERT INTO t VALUES (-1)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
"""

WRITE_ONCE = """
import sys, storekit
options = storekit.SqliteOptions(busy_timeout_ms=20000)
with storekit.open_database(sys.argv[1], sqlite=options) as db:
    db.run("INSERT INTO t VALUES (?)", (int(sys.argv[2]),))
"""


class Interrupt(Exception):
    """Raised by the test's signal handler."""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return wal_file(tmp_path / "safety.db")


@pytest.fixture
def alarm() -> Iterator[None]:
    def raise_it(signum: int, frame: FrameType | None) -> None:
        raise Interrupt

    previous = signal.signal(signal.SIGALRM, raise_it)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _write_elsewhere(path: Path, value: int) -> None:
    """Another process writes; it fails (BusyError) if the lock stayed wedged."""
    done = subprocess.run([sys.executable, "-c", WRITE_ONCE, str(path), str(value)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _values(db: storekit.Database) -> list[int]:
    return sorted(r["x"] for r in db.all("SELECT x FROM t"))


# 1. An exception while waiting for the write lock leaves nothing behind.
@pytest.mark.parametrize("waits_for", ["process", "foreign", "thread"])
@pytest.mark.parametrize("how", ["run", "transaction"])
def test_a_signal_while_waiting_for_the_write_lock_leaves_it_usable(
        db_path: Path, alarm: None, waits_for: str, how: str) -> None:
    held = threading.Event()
    finish = threading.Event()
    holder: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None
    with storekit.open_database(db_path) as db:
        if waits_for == "thread":
            def hold() -> None:
                with db.transaction() as tx:
                    tx.run("INSERT INTO t VALUES (-1)")
                    held.set()
                    finish.wait(60)

            thread = threading.Thread(target=hold)
            thread.start()
            assert held.wait(60)
        else:
            script = HOLD_TX if waits_for == "process" else HOLD_PLAIN
            holder = start_holder(script, db_path, 1.0)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(Interrupt):
                if how == "run":
                    db.run("INSERT INTO t VALUES (1)")
                else:
                    with db.transaction() as tx:
                        tx.run("INSERT INTO t VALUES (1)")
                if waits_for == "foreign":
                    # SQLite's busy handler does not return to Python until it has the lock
                    # or gives up: the handler runs once BEGIN returns, inside the write.
                    raise AssertionError("the write returned without the signal's exception")
        finally:
            finish.set()
            if thread is not None:
                thread.join(60)
            if holder is not None:
                holder.communicate(timeout=60)
        # The holder has committed: this process, another thread and another process write.
        db.run("INSERT INTO t VALUES (2)")
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (3)")
        other = threading.Thread(target=db.run, args=("INSERT INTO t VALUES (4)",))
        other.start()
        other.join(60)
        _write_elsewhere(db_path, 5)
        values = _values(db)
    # The interrupted write either committed whole before the signal (autocommit) or not.
    assert values in ([-1, 2, 3, 4, 5], [-1, 1, 2, 3, 4, 5]), values


def test_keyboard_interrupt_while_waiting_for_another_process(db_path: Path) -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    holder = start_holder(HOLD_TX, db_path, 1.0)
    try:
        with storekit.open_database(db_path) as db:
            for _ in range(3):  # again and again while the other process holds the lock
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                with pytest.raises(KeyboardInterrupt):
                    db.run("INSERT INTO t VALUES (1)")
            holder.communicate(timeout=60)
            _write_elsewhere(db_path, 2)
            db.run("INSERT INTO t VALUES (3)")
            assert _values(db) == [-1, 2, 3]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        holder.kill()
        holder.communicate()


EMFILE = """
import os, resource, sys, storekit
options = storekit.SqliteOptions(wal_autocheckpoint=50, busy_timeout_ms=300)
db = storekit.open_database(sys.argv[1], sqlite=options)
db.run("INSERT INTO t (x) VALUES (0)")  # opens the writer, the turn's file and the -shm map
acked = 1
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))  # no descriptor left
for i in range(1, 60):  # past 50 pages of WAL: the checkpoint's connection cannot open
    try:
        db.run("INSERT INTO t (x) VALUES (?)", (i,))
        acked += 1
    except storekit.StoreError as exc:
        print("ERROR", type(exc).__name__, exc, flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
db.run("INSERT INTO t (x) VALUES (1000)")
acked += 1
print("ACKED", acked, flush=True)
"""


def test_out_of_descriptors_at_the_checkpoint_fails_no_committed_write(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN pad TEXT DEFAULT (hex(randomblob(3000)))")
    done = subprocess.run([sys.executable, "-c", EMFILE, str(db_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR" not in done.stdout, done.stdout[-2000:]
    with storekit.open_database(db_path) as db:
        row = db.get("SELECT COUNT(*) AS n FROM t")
    assert done.stdout.split()[-1] == "61"
    assert row == {"n": 61}  # every acknowledged write, and only those


# 7. A paused process blocks nobody beyond its turn.
IDLE_THEN_WRITE = """
import sys, storekit
# A long slice: the turn is still this process's when the test stops it, whatever the load.
options = storekit.SqliteOptions(lock_slice_ms=60000)
with storekit.open_database(sys.argv[1], sqlite=options) as db:
    db.run("INSERT INTO t VALUES (1)")
    print("holding", flush=True)
    sys.stdin.readline()
    db.run("INSERT INTO t VALUES (2)")
    print("wrote", flush=True)
"""


def test_a_process_stopped_between_transactions_blocks_nobody(db_path: Path) -> None:
    paused = subprocess.Popen([sys.executable, "-c", IDLE_THEN_WRITE, str(db_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert paused.stdin is not None
    assert paused.stdout is not None
    try:
        assert paused.stdout.readline().strip() == "holding"
        paused.send_signal(signal.SIGSTOP)
        options = storekit.SqliteOptions(busy_timeout_ms=3000)
        with storekit.open_database(db_path, sqlite=options) as db:
            for i in range(10, 15):
                db.run("INSERT INTO t VALUES (?)", (i,))  # BusyError if it kept its turn
            with db.transaction() as tx:
                tx.run("INSERT INTO t VALUES (15)")
            _write_elsewhere(db_path, 16)
            paused.send_signal(signal.SIGCONT)
            paused.stdin.write("go\n")
            paused.stdin.flush()
            assert paused.stdout.readline().strip() == "wrote"
            db.run("INSERT INTO t VALUES (17)")
            assert _values(db) == [1, 2, 10, 11, 12, 13, 14, 15, 16, 17]
    finally:
        paused.send_signal(signal.SIGCONT)
        paused.kill()
        paused.communicate()


@pytest.mark.parametrize("then", ["SIGCONT", "SIGKILL"])
def test_a_process_stopped_inside_a_transaction_gives_busy_then_nothing_wedged(
        db_path: Path, then: str) -> None:
    holder = start_holder(HOLD_TX, db_path, 0.5)
    try:
        holder.send_signal(signal.SIGSTOP)
        options = storekit.SqliteOptions(busy_timeout_ms=500)
        with storekit.open_database(db_path, sqlite=options) as db:
            with pytest.raises(storekit.BusyError):
                db.run("INSERT INTO t VALUES (1)")  # it holds SQLite's lock: correct
            holder.send_signal(signal.SIGCONT if then == "SIGCONT" else signal.SIGKILL)
            holder.communicate(timeout=60)
            db.run("INSERT INTO t VALUES (2)")
            _write_elsewhere(db_path, 3)
            expected = [-1, 2, 3] if then == "SIGCONT" else [2, 3]
            assert _values(db) == expected
    finally:
        holder.kill()
        holder.communicate()


# 8. fork.
def _turn_ended(db: storekit.Database) -> None:
    """Wait until this process's turn has ended (idle): what a fork usually finds."""
    lease = db._backend._lease  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while lease._held and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not lease._held


def _child(work: object) -> None:
    """Run `work` in a forked child; exit 0 only if it returned (never back into pytest)."""
    code = 1
    try:
        work()  # type: ignore[operator]
        code = 0
    except BaseException as exc:  # reported through the exit code and stderr
        print("child:", type(exc).__name__, exc, file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_database_opened_before_fork_works_in_the_child_and_the_parent(db_path: Path) -> None:
    with storekit.open_database(db_path) as db:
        db.run("INSERT INTO t VALUES (0)")  # writer, turn, reader: all opened before the fork
        assert _values(db) == [0]
        _turn_ended(db)
        pid = os.fork()
        if pid == 0:
            def work() -> None:
                for i in range(100, 150):
                    db.run("INSERT INTO t VALUES (?)", (i,))
                with db.transaction() as tx:
                    tx.run("INSERT INTO t VALUES (150)")
                assert len(_values(db)) >= 52
            _child(work)
        for i in range(1, 50):
            db.run("INSERT INTO t VALUES (?)", (i,))
        assert _wait(pid) == 0
        assert _values(db) == list(range(50)) + list(range(100, 151))


_inherited: storekit.Database | None = None


def _pool_write(n: int) -> int:
    assert _inherited is not None
    for i in range(20):
        _inherited.run("INSERT INTO t VALUES (?)", (n * 100 + i,))
    return os.getpid()


def test_a_multiprocessing_pool_writes_through_an_inherited_database(db_path: Path) -> None:
    global _inherited
    with storekit.open_database(db_path) as db:
        db.run("INSERT INTO t VALUES (-1)")
        _turn_ended(db)
        _inherited = db
        try:
            with multiprocessing.get_context("fork").Pool(3) as pool:
                pids = pool.map(_pool_write, range(6), chunksize=1)
        finally:
            _inherited = None
        assert os.getpid() not in pids
        db.run("INSERT INTO t VALUES (-2)")
        assert _values(db) == sorted([-1, -2, *(n * 100 + i for n in range(6)
                                                for i in range(20))])


def test_a_fork_inside_a_transaction_refuses_it_in_the_child(db_path: Path) -> None:
    with storekit.open_database(db_path) as db:
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (1)")
            pid = os.fork()
            if pid == 0:
                def work() -> None:
                    with pytest.raises(storekit.StoreError, match="fork"):
                        tx.run("INSERT INTO t VALUES (2)")
                    with pytest.raises(storekit.StoreError, match="fork"):
                        db.run("INSERT INTO t VALUES (3)")
                    seen: list[list[int]] = []  # another thread's reads still work
                    reader = threading.Thread(target=lambda: seen.append(_values(db)))
                    reader.start()
                    reader.join(60)
                    assert seen == [[]]  # the transaction is the parent's, uncommitted
                _child(work)
            assert _wait(pid) == 0
            tx.run("INSERT INTO t VALUES (4)")
        assert _values(db) == [1, 4]


@pytest.mark.postgres
def test_a_postgres_database_opened_before_fork_works_in_both(
        storekit_postgres_url: str) -> None:
    with isolated_schema(storekit_postgres_url) as url, storekit.create_database(url) as db:
        db.exec("CREATE TABLE t (x integer)")
        db.run("INSERT INTO t VALUES (0)")  # the pool has connections the child inherits

        def queries(offset: int) -> None:
            for i in range(300):
                assert db.get("SELECT ? + 0 AS v", (offset + i,)) == {"v": offset + i}
            db.run("INSERT INTO t VALUES (?)", (offset,))

        pid = os.fork()
        if pid == 0:
            _child(lambda: queries(100_000))
        queries(200_000)
        assert _wait(pid) == 0
        with db.transaction() as tx:
            pid = os.fork()
            if pid == 0:
                def work() -> None:
                    with pytest.raises(storekit.StoreError, match="fork"):
                        tx.get("SELECT 1 AS v")
                _child(work)
            assert _wait(pid) == 0
            tx.run("INSERT INTO t VALUES (1)")  # the parent's session was not disturbed
        assert sorted(r["x"] for r in db.all("SELECT x FROM t")) == [0, 1, 100_000, 200_000]


# 9. The in-memory database.
def test_a_half_read_memory_iter_blocks_no_other_thread() -> None:
    options = storekit.SqliteOptions(busy_timeout_ms=500)
    with storekit.create_memory_database(sqlite=options) as db:
        db.exec("CREATE TABLE t (x INTEGER)")
        db.run_many("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
        rows = db.iter("SELECT x FROM t ORDER BY x")
        assert next(rows) == {"x": 0}
        results: list[object] = []

        def other() -> None:
            try:
                results.append(db.get("SELECT COUNT(*) AS n FROM t"))
                results.append(db.run("INSERT INTO t VALUES (10)").rowcount)
            except storekit.StoreError as exc:
                results.append(exc)

        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        thread.join(60)
        alive = thread.is_alive()
        rows.close()
        thread.join(60)
        assert not alive, "another thread waited for a half-read iter"
        assert results == [{"n": 10}, 1]


def test_a_memory_transaction_bounds_other_threads_reads_by_the_busy_timeout() -> None:
    options = storekit.SqliteOptions(busy_timeout_ms=200)
    with storekit.create_memory_database(sqlite=options) as db:
        db.exec("CREATE TABLE t (x INTEGER)")
        results: list[object] = []
        with db.transaction() as tx:
            tx.run("INSERT INTO t VALUES (1)")

            def other() -> None:
                for call in (lambda: db.get("SELECT 1 AS v"), lambda: list(db.iter("SELECT 1"))):
                    try:
                        results.append(call())
                    except storekit.StoreError as exc:
                        results.append(exc)

            thread = threading.Thread(target=other, daemon=True)
            thread.start()
            thread.join(60)
            assert not thread.is_alive()
        assert [type(r) for r in results] == [storekit.BusyError, storekit.BusyError]
        assert db.get("SELECT x FROM t") == {"x": 1}
