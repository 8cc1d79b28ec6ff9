"""One process, one file: each workload's write transaction (bench calibrate's) through a
bare sqlite3 connection, storekit with fair locking (the default) and storekit with
`fair_locking=False`, in alternating blocks; prints the median time per transaction of
each and how long storekit's checkpoints took. Machine time, not a test.

Run it with `.venv/bin/python scripts/fair_vs_stock_probe.py agent-write 3000`.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

import storekit
from bench.harness.configs import CONFIGS
from bench.harness.workloads import WORKLOADS
from bench.investigations.calibrate_tx import WRITE_TXS
from storekit.backends.sqlite import checkpoint

BLOCKS = 10


def main(workload: str, per_block: int) -> None:
    spent = [0.0, 0]
    run = checkpoint.Checkpointer.run

    def timed(self: checkpoint.Checkpointer, *, in_turn: bool) -> None:
        started = time.perf_counter()
        run(self, in_turn=in_turn)
        spent[0] += time.perf_counter() - started
        spent[1] += 1

    checkpoint.Checkpointer.run = timed  # type: ignore[method-assign]
    path = f"{tempfile.mkdtemp()}/probe.db"
    with CONFIGS["sqlite-wal"].open(f"sqlite:///{path}") as db:
        WORKLOADS[workload].setup(db, {"corpus": 2000})
        WORKLOADS[workload].prepare(db, 1, ["writer"] * 2)
    bare = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=NORMAL")
    ways: dict[str, tuple[Any, Any]] = {
        "bare sqlite3": (WRITE_TXS[workload].bare, bare),
        "storekit": (WRITE_TXS[workload].storekit, storekit.open_database(path)),
        "storekit, fair_locking=False": (WRITE_TXS[workload].storekit, storekit.open_database(
            path, sqlite=storekit.SqliteOptions(fair_locking=False))),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    seq = 0
    for _ in range(BLOCKS):
        for name, (tx, conn) in ways.items():
            started = time.perf_counter()
            for _ in range(per_block):
                tx(conn, 1, 0 if name == "bare sqlite3" else 1, seq)
                seq += 1
            times[name].append((time.perf_counter() - started) / per_block * 1e6)
    for name, values in times.items():
        print(f"{name:30s} {statistics.median(values):7.1f} us per transaction")
    if spent[1]:
        print(f"storekit checkpoints: {spent[1]}, {spent[0] / spent[1] * 1000:.2f} ms each")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "agent-write",
         int(sys.argv[2]) if len(sys.argv) > 2 else 3000)
