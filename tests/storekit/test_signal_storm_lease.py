"""A signal handler raising at the entry of every Python function a SQLite write runs,
the standard library's included (threading, queue): the fair lock, the cross-process
turn (WriteLease) and their release paths.

threading.Condition's methods, say, are Python code: a handler raising at the entry of
Condition.__exit__ once left the lease's mutex held for good. After each interrupted
write, with the interrupted thread staying away: another thread of this process writes
(the fair lock was given back) and another process writes in its own turn, not by
waiting out a stalled queue (the turn was given back). Timeouts are upper bounds for
"must not hang" only.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import storekit
from tests.storekit.test_signal_storm import interrupted_at, raising_handler

HERE = str(Path(__file__).parent)

# Its stall bound raised far past the busy timeout: a turn this process kept is then a
# BusyError there, not a write that went in after half a second.
OTHER = """
import sys, storekit
import storekit.backends.sqlite.backend as backend
backend.STALL_S = 60.0
db = storekit.open_database(sys.argv[1], busy_timeout_ms=20000)
db.run("INSERT INTO t VALUES (0, 'process')")
lease = db._backend._lease
assert lease is not None and not lease._stalled, "wrote only once the queue stalled"
db.close()
"""


def python_calls(action: Callable[[], Any]) -> list[CodeType]:
    """Every Python function action() calls in this thread, outside the tests."""
    seen: dict[CodeType, None] = {}

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and not frame.f_code.co_filename.startswith(HERE):
            seen.setdefault(frame.f_code)

    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        action()
    finally:
        sys.settrace(None)
    return list(seen)


def write_autocommit(db: storekit.Database, k: int) -> None:
    db.run("INSERT INTO t VALUES (?, 'main')", (k,))


def write_in_transaction(db: storekit.Database, k: int) -> None:
    with db.transaction() as tx:
        tx.run("INSERT INTO t VALUES (?, 'main')", (k,))


@pytest.mark.parametrize("write", [write_autocommit, write_in_transaction],
                         ids=["run", "transaction"])
def test_no_lock_and_no_turn_stays_held_after_a_signal_at_any_function_entry(
        tmp_path: Path, write: Callable[[storekit.Database, int], None]) -> None:
    path = tmp_path / "lease.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k INTEGER, who TEXT)")
    conn.close()
    db = storekit.open_database(path, busy_timeout_ms=20000)
    key = iter(range(1, 1_000_000))
    write(db, next(key))  # the lease thread and the reader exist from here on
    targets = python_calls(lambda: write(db, next(key)))
    names = {c.co_name for c in targets}
    assert {"_release_writer", "acquire", "release"} <= names, names
    hit, failed = [], []
    with raising_handler():
        for code in targets:
            where = f"{Path(code.co_filename).name}:{code.co_name}"
            if interrupted_at(code, lambda: write(db, next(key))):
                hit.append(where)
            errors: list[BaseException] = []

            def thread_writes(errors: list[BaseException] = errors) -> None:
                try:
                    db.run("INSERT INTO t VALUES (0, 'thread')")
                except BaseException as exc:  # reported below
                    errors.append(exc)

            thread = threading.Thread(target=thread_writes, daemon=True)
            thread.start()
            thread.join(60)
            if thread.is_alive() or errors:
                failed.append(f"{where}: another thread: {errors or 'hung'}")
                break
            other = subprocess.run([sys.executable, "-c", OTHER, str(path)], timeout=120,
                                   capture_output=True, text=True)
            if other.returncode != 0:
                failed.append(f"{where}: another process: {other.stderr.strip()[-300:]}")
                break
            write(db, next(key))
    assert not failed, failed  # (db is not closed then: closing would wait for the lock)
    db.close()
    assert hit
