"""Helpers shared by tests that need another process holding a lock."""

from __future__ import annotations

import subprocess
import sys


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
