"""Signals raising at any moment of a write, while another thread and another process write.

An exception can come between a lock changing hands and the caller learning of it (Python
runs signal handlers after any call); nothing may stay wedged and no acknowledged write may
be missing. Timeouts are upper bounds for "must not hang" only.

Not part of the suite (random timing). It failed about half its runs while WriteLease
used threading.Condition (Python code: a handler raising at the entry of Condition.__exit__
left the lease's mutex held); the deterministic cases are in
tests/storekit/test_signal_storm.py and tests/storekit/test_signal_storm_lease.py.
Run it with
`.venv/bin/pytest -p no:cacheprovider scripts/lock_storm_probe.py`.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import pytest

import storekit

OTHER = """
import sys, time, storekit
db = storekit.open_database(sys.argv[1], sqlite=storekit.SqliteOptions(busy_timeout_ms=3000))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        db.run("INSERT INTO t VALUES ('other')")
    except storekit.BusyError:
        pass
db.run("INSERT INTO t VALUES ('other-final')")  # raises (exit 1) if the file stayed wedged
"""


class Interrupt(Exception):
    """Raised by the test's signal handler."""


@pytest.mark.parametrize("mode", ["run", "transaction"])
def test_a_signal_storm_wedges_nothing_and_loses_nothing(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "storm.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (who TEXT)")
    conn.close()

    armed = [False]

    def raise_it(signum: int, frame: FrameType | None) -> None:
        if armed[0]:  # one exception per write, never in the test's own bookkeeping
            armed[0] = False
            raise Interrupt

    previous = signal.signal(signal.SIGALRM, raise_it)
    other = subprocess.Popen([sys.executable, "-c", OTHER, str(path), "6"])
    db = storekit.open_database(str(path), sqlite=storekit.SqliteOptions(busy_timeout_ms=3000))
    stop = threading.Event()

    def thread_writes() -> None:
        while not stop.is_set():
            with contextlib.suppress(storekit.BusyError):
                db.run("INSERT INTO t VALUES ('thread')")

    thread = threading.Thread(target=thread_writes)
    thread.start()
    acked = 0
    try:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                try:
                    armed[0] = True
                    signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0001, 0.01))
                    if mode == "run":
                        db.run("INSERT INTO t VALUES ('main')")
                    else:
                        with db.transaction() as tx:
                            tx.run("INSERT INTO t VALUES ('main')")
                    armed[0] = False
                    acked += 1
                except (Interrupt, storekit.BusyError):
                    armed[0] = False
            except Interrupt:
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        stop.set()
        thread.join(60)
    db.run("INSERT INTO t VALUES ('final')")  # BusyError if this process stayed wedged
    assert other.wait(60) == 0
    db.close()
    check = sqlite3.connect(path)
    (main,) = check.execute("SELECT count(*) FROM t WHERE who = 'main'").fetchone()
    assert main >= acked
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
