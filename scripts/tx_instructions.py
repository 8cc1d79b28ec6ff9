"""Instructions per write, storekit's sync API against the raw driver, counted by valgrind
(machine load does not move a count the way it moves a time).

Cases: `empty` (an empty write transaction), `insert` (an autocommit insert), or a
workload name (`agent-write`, `read-while-write`, `single-insert`, `search`: the write
transaction `bench calibrate` measures). Modes: `raw` (sqlite3 alone), `stock` (storekit
with fair_locking=False) and `fair` (storekit's default). The lease's times are scaled by
50, as valgrind runs code ~50x slower. Run each case at two loop lengths and take the
difference, so setup cancels out:

    for n in 1000 11000; do PYTHONPATH=. valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null .venv/bin/python scripts/tx_instructions.py \
        empty fair $n 2>&1 | grep Collected
    done

(Collected at 11000 - at 1000) / 10000 is the count per operation.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable

import storekit
import storekit.backends.sqlite.writelock as writelock
from bench.harness.workloads import WORKLOADS
from bench.investigations.calibrate_tx import WRITE_TXS

for _name in ("ROUND_S", "MAX_SLICE_S", "IDLE_S", "BUSY_LOOK_S", "STALL_S"):
    setattr(writelock, _name, getattr(writelock, _name) * 50)

SINK = "CREATE TABLE sink (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)"
INSERT = "INSERT INTO sink (a, b) VALUES (?, ?)"


def _raw(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def operation(case: str, mode: str, path: str) -> Callable[[int], None]:
    options = storekit.SqliteOptions(fair_locking=mode == "fair", lock_slice_ms=100)
    if case in ("empty", "insert"):
        if mode == "raw":
            conn = _raw(path)
            conn.execute(SINK)
            if case == "empty":
                return lambda i: (conn.execute("BEGIN IMMEDIATE"), conn.execute("COMMIT"),
                                  None)[-1]
            return lambda i: conn.execute(INSERT, ("x", i)).close()
        db = storekit.open_database(path, sqlite=options)
        db.exec(SINK)
        if case == "empty":
            def empty(i: int) -> None:
                with db.transaction():
                    pass
            return empty
        return lambda i: (db.run(INSERT, ("x", i)), None)[-1]
    workload, tx = WORKLOADS[case], WRITE_TXS[case]
    db = storekit.open_database(path, sqlite=options)
    workload.setup(db, {"messages": 2000, "corpus": 2000, "rows": 2000})
    workload.prepare(db, 1, ["writer"])
    if mode == "raw":
        conn = _raw(path)
        return lambda i: tx.bare(conn, 1, 0, i)
    return lambda i: tx.storekit(db, 1, 0, i)


def main(case: str, mode: str, n: int) -> None:
    op = operation(case, mode, os.path.join(tempfile.mkdtemp(), "tx.db"))
    for i in range(n):
        op(i)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
