"""Benchmarks outside the agent workloads: migration speed and notification latency.

python -m bench extras migration [--rows 1000000] [--docs 50000]
python -m bench extras notify [--messages 500] [--listeners 1,4]
Each writes a JSON file under results/extras/ and prints a table. Figures, not assertions.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import storekit
from bench.harness import metrics
from storekit.testing import isolated_schema, postgres_server


def _build_sqlite(path: Path, rows: int, docs: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE narrow (id INTEGER PRIMARY KEY, n INTEGER, label TEXT)")
    conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body JSON)")
    conn.executemany("INSERT INTO narrow VALUES (?, ?, ?)",
                     ((i, i * 7, f"row {i}") for i in range(1, rows + 1)))
    pad = "x" * 900
    conn.executemany("INSERT INTO docs VALUES (?, ?)",
                     ((i, json.dumps({"i": i, "agent": i % 50, "summary": pad}))
                      for i in range(1, docs + 1)))
    conn.commit()
    conn.close()


def _migrate_child(source: str, target: str, table: str, out: Any) -> None:
    """Runs in its own process so its peak memory is the migration's alone."""
    from storekit.migration import migrate

    started = time.perf_counter()
    report = migrate(source, target, tables=[table])
    seconds = time.perf_counter() - started
    out.put({"table": table, "ok": report.ok, "rows": report.tables[0].copied_rows,
             "seconds": seconds, "copy_seconds": report.tables[0].seconds,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def migration(rows: int, docs: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="storekit-migbench-"))
    src = folder / "source.db"
    _build_sqlite(src, rows, docs)
    results = []
    ctx = multiprocessing.get_context("spawn")
    with postgres_server() as server, isolated_schema(server.url, prefix="migbench") as url:
        for table in ("narrow", "docs"):
            out = ctx.Queue()
            proc = ctx.Process(target=_migrate_child, args=(f"sqlite:///{src}", url, table, out))
            proc.start()
            result = out.get(timeout=3600)
            proc.join()
            result["rows_per_s_total"] = result["rows"] / result["seconds"]
            result["rows_per_s_copy"] = result["rows"] / result["copy_seconds"]
            results.append(result)
    return {"benchmark": "migration sqlite -> postgres (COPY, one transaction, then verify)",
            "rows": rows, "docs": docs, "results": results}


def _listener(url: str, ready: Any, out: Any, expected: int) -> None:
    received: dict[int, float] = {}
    with storekit.create_database(url) as db, db.listen("bench_latency") as sub:
        ready.set()
        while len(received) < expected:
            n = sub.get(timeout=30)
            if n is None:
                break
            received[int(n.payload)] = n.received_at
    out.put(received)


def notify_latency(messages: int, listeners: list[int]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    folder = Path(tempfile.mkdtemp(prefix="storekit-notifybench-"))
    rows = []
    with postgres_server() as server:
        for backend, url in (("sqlite", f"sqlite:///{folder / 'n.db'}"),
                             ("postgres", server.url)):
            for count in listeners:
                ready = [ctx.Event() for _ in range(count)]
                outs = [ctx.Queue() for _ in range(count)]
                procs = [ctx.Process(target=_listener, args=(url, ready[i], outs[i], messages))
                         for i in range(count)]
                for p in procs:
                    p.start()
                for r in ready:
                    r.wait(60)
                sent: dict[int, float] = {}
                with storekit.create_database(url) as db:
                    for seq in range(messages):
                        # Measured from the moment COMMIT is issued.
                        tx = db.transaction()
                        with tx:
                            db.notify("bench_latency", str(seq))
                            sent[seq] = time.time()
                        time.sleep(0.005)
                received = [out.get(timeout=120) for out in outs]
                for p in procs:
                    p.join(30)
                latencies = [got[s] - sent[s] for got in received for s in got if s in sent]
                lost = sum(messages - len(got) for got in received)
                s = metrics.latency_summary(latencies)
                rows.append({"backend": backend, "listeners": count, "messages": messages,
                             "lost": lost, "p50_ms": s["p50"] * 1000, "p99_ms": s["p99"] * 1000,
                             "max_ms": s["max"] * 1000,
                             "mean_ms": statistics.fmean(latencies) * 1000})
    return {"benchmark": "notification delivery latency, commit issued -> received",
            "poll_interval_sqlite_s": 0.02, "results": rows}
