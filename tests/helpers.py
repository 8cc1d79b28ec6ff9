"""Helpers shared by tests: another process holding a lock, a plain WAL file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def start_holder(script: str, *args: object, ready: str = "holding") -> subprocess.Popen[str]:
    """Run `script` in a new Python process; return once it prints `ready` (its lock is
    taken). The caller kills it and calls communicate()."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != ready:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"holder process printed {line!r}, expected {ready!r}")
    return proc


def wal_file(path: Path) -> Path:
    """A WAL-mode SQLite file holding an empty table t (x INTEGER), made with plain sqlite3."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    return path
