"""Helpers shared by tests: another process holding a lock, a plain WAL file, the data
methods of a transaction."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

# Another program's writer holds SQLite's write lock, having run the SQL in argv[2], until
# let_go() writes a line to its stdin (start it with told=True).
HOLD_UNTIL_TOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute(sys.argv[2])
print("holding", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


def start_holder(script: str, *args: object, ready: str = "holding",
                 told: bool = False) -> subprocess.Popen[str]:
    """Run `script` in a new Python process; return once it prints `ready` (its lock is
    taken). The caller kills it and calls communicate(), or, with told=True (its stdin is a
    pipe), ends it with let_go()."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdin=subprocess.PIPE if told else None,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != ready:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"holder process printed {line!r}, expected {ready!r}")
    return proc


def let_go(proc: subprocess.Popen[str], timeout: float) -> None:
    """Tell a holder started with told=True to let go, and wait for it to exit cleanly."""
    proc.communicate("go\n", timeout=timeout)
    assert proc.returncode == 0


def wal_file(path: Path) -> Path:
    """A WAL-mode SQLite file holding an empty table t (x INTEGER), made with plain sqlite3."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    return path


# Every data method of a transaction, with arguments for a table "kept (v integer)": for
# tests that a transaction (or a method taken from it) refuses once its block is over.
KEPT_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("run", ("INSERT INTO kept (v) VALUES (?)", (1,))),
    ("run_deferred", ("INSERT INTO kept (v) VALUES (?)", (2,))),
    ("get", ("SELECT count(*) AS n FROM kept",)),
    ("all", ("SELECT v FROM kept",)),
    ("run_many", ("INSERT INTO kept (v) VALUES (?)", [(3,), (4,)])),
    ("exec", ("INSERT INTO kept (v) VALUES (5)",)),
]
