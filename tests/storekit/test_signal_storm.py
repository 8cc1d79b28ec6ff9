"""A signal handler raising at the first instruction of any storekit function a write runs.

Python runs a pending signal handler at a function's first instruction, before any of its
code: at the entry of Transaction.__exit__ none of its cleanup runs. Here a trace hook
raises a real signal (its handler raises) at the entry of each storekit function a
transaction or a write calls, one function per case, so every such point is hit
deterministically. After each: the acknowledged writes are in the database, another
Database (its own connections, locks and turn: another process for the lock queue) can
write at once, and this thread's next write is not joined to the dead transaction.
Timeouts are upper bounds for "must not hang" only.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import storekit
from storekit import Database

PACKAGE = str(Path(storekit.__file__).parent)
EXIT = storekit.Transaction.__exit__.__code__  # looked up on the class: the plain function


class Interrupt(Exception):
    """Raised by the test's signal handler."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupt


@contextmanager
def raising_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGUSR1, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def storekit_calls(action: Callable[[], Any]) -> list[CodeType]:
    """The storekit functions action() calls, in first-call order."""
    seen: dict[CodeType, None] = {}

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            seen.setdefault(frame.f_code)

    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        action()
    finally:
        sys.settrace(None)
    return list(seen)


def interrupted_at(code: CodeType, action: Callable[[], Any]) -> bool:
    """Run action() with a signal raised at the first entry of code; True if it raised."""
    armed = [True]

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and armed[0] and frame.f_code is code:
            armed[0] = False
            signal.raise_signal(signal.SIGUSR1)  # the handler raises here, at the entry

    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        action()
    except Interrupt:
        return True
    finally:
        sys.settrace(None)
    return False


def other_writes(url: str, key: int) -> None:
    """Another Database's write: it must not wait for this thread to call again."""
    other = storekit.create_database(url, busy_timeout_ms=20000)
    try:
        other.run("UPDATE c SET n = n + 1 WHERE id = 1")
        other.run("INSERT INTO t VALUES (?, 'other')", (key,))
    finally:
        other.close()


def keys(db: Database, who: str) -> set[int]:
    return {r["k"] for r in db.all("SELECT k FROM t WHERE who = ?", (who,))}


def storm(url: str, write: Callable[[Database, int], None], name: str) -> None:
    setup = storekit.create_database(url)
    setup.exec("CREATE TABLE t (k INTEGER, who TEXT); CREATE TABLE c (id INTEGER, n INTEGER);"
               " INSERT INTO c VALUES (1, 0);")
    setup.close()
    db = storekit.create_database(url, busy_timeout_ms=20000)
    key = iter(range(1, 1_000_000))
    targets = storekit_calls(lambda: write(db, next(key)))
    assert (EXIT in targets) == (name != "run")
    acked, hit = set(), []
    with raising_handler():
        for code in targets:
            k = next(key)
            if interrupted_at(code, lambda k=k: write(db, k)):  # type: ignore[misc]
                hit.append(code.co_name)
            else:
                acked.add(k)
            other_writes(url, next(key))  # before this thread calls storekit again
            assert db._local.tx is None or db._local.tx._alive() is not None, code.co_name
            k = next(key)
            write(db, k)  # not joined to a dead transaction: it commits
            acked.add(k)
            check = storekit.create_database(url)
            try:
                # Every acknowledged write is committed: visible to another Database.
                assert acked <= keys(check, "main"), code.co_name
            finally:
                check.close()
    assert hit, "no storekit function was interrupted"
    db.close()
    reopened = storekit.create_database(url)
    try:
        assert acked <= keys(reopened, "main")
        (row,) = reopened.all("SELECT n FROM c WHERE id = 1")
        assert row["n"] >= len(targets)  # every other_writes() committed
    finally:
        reopened.close()


def write_in_transaction(db: Database, k: int) -> None:
    with db.transaction() as tx:
        tx.run("UPDATE c SET n = n + 1 WHERE id = 1")  # a row lock on PostgreSQL
        tx.run("INSERT INTO t VALUES (?, 'main')", (k,))


def write_joined(db: Database, k: int) -> None:
    with db.transaction():
        db.run("UPDATE c SET n = n + 1 WHERE id = 1")
        db.run("INSERT INTO t VALUES (?, 'main')", (k,))


def write_nested(db: Database, k: int) -> None:
    with db.transaction() as tx:
        tx.run("UPDATE c SET n = n + 1 WHERE id = 1")
        with db.transaction() as inner:
            inner.run("INSERT INTO t VALUES (?, 'main')", (k,))


def write_autocommit(db: Database, k: int) -> None:
    db.run("INSERT INTO t VALUES (?, 'main')", (k,))


WRITES = {"transaction": write_in_transaction, "joined": write_joined,
          "nested": write_nested, "run": write_autocommit}


@pytest.mark.parametrize("name", list(WRITES))
def test_a_signal_at_the_entry_of_every_storekit_function_wedges_nothing(
        store_url: str, name: str) -> None:
    storm(store_url, WRITES[name], name)


def test_the_dead_transaction_is_rolled_back_before_the_next_statement_runs(
        store_url: str) -> None:
    """The exact failure: __exit__ never runs; the loop's next db.run must not join the
    open transaction (acknowledged, then never committed)."""
    setup = storekit.create_database(store_url)
    setup.exec("CREATE TABLE t (k INTEGER, who TEXT)")
    setup.close()
    db = storekit.create_database(store_url)
    with raising_handler():
        assert interrupted_at(EXIT, lambda: write_autocommit_in_tx(db))
    assert db._local.tx is None  # rolled back as the with statement ended
    db.run("INSERT INTO t VALUES (2, 'main')")
    check = storekit.create_database(store_url)
    try:
        assert keys(check, "main") == {2}  # the interrupted one rolled back, 2 committed
    finally:
        check.close()
        db.close()


def write_autocommit_in_tx(db: Database) -> None:
    with db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (1, 'main')")


OTHER = """
import sys, storekit
db = storekit.open_database(sys.argv[1], busy_timeout_ms=20000)
db.run("INSERT INTO t VALUES (0, 'process')")
"""


def test_another_process_writes_while_the_interrupted_thread_stays_away(
        tmp_path: Path) -> None:
    """SQLite: no write lock, no turn, no open BEGIN is left behind for other processes,
    while the interrupted thread makes no further call."""
    path = tmp_path / "storm.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k INTEGER, who TEXT)")
    conn.close()
    db = storekit.open_database(path)
    with raising_handler():
        assert interrupted_at(EXIT, lambda: write_autocommit_in_tx(db))
    other = subprocess.run([sys.executable, "-c", OTHER, str(path)], timeout=120)
    assert other.returncode == 0
    done = threading.Event()

    def thread_writes() -> None:  # another thread of this process too
        db.run("INSERT INTO t VALUES (0, 'thread')")
        done.set()

    thread = threading.Thread(target=thread_writes)
    thread.start()
    thread.join(60)
    assert done.is_set()
    db.close()
