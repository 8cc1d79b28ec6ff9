"""Is the harness the bottleneck? Compare it with pgbench and with a bare sqlite3 loop,
on the same statement, clients and server, in the same run (A B A B)."""

from __future__ import annotations

import os
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness.configs import CONFIGS
from bench.harness.environment import fsync_latency
from bench.harness.runner import Plan, execute_specs
from bench.harness.workloads.single_insert import DOC_TEXT
from storekit.testing import find_pg_bin, postgres_server
from storekit.url import DatabaseURL


def pgbench_tps(bindir: Path, url: str, clients: int, seconds: float) -> float:
    """pgbench with one INSERT per transaction; the password goes in the environment."""
    u = DatabaseURL.parse(url)
    literal = DOC_TEXT.replace("'", "''")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(f"INSERT INTO bench_insert (doc) VALUES ('{literal}');\n")
    os.chmod(script.name, 0o644)
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    cmd = [str(bindir / "pgbench"), "-n", "-c", str(clients), "-j", str(min(clients, 2)),
           "-T", str(max(1, round(seconds))), "-f", script.name, "-h", u.host or "127.0.0.1",
           "-p", str(u.port or 5432), "-U", u.username or "postgres", u.database or "postgres"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True,
                             timeout=seconds * 4 + 30).stdout
    finally:
        os.unlink(script.name)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not match:
        raise RuntimeError(f"could not read pgbench's tps from: {out[-500:]}")
    return float(match.group(1))


def bare_sqlite_rate(path: Path, seconds: float) -> float:
    """Rows/s of a plain sqlite3 loop, one commit per row, WAL + synchronous=NORMAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_insert (id INTEGER PRIMARY KEY, doc TEXT)")
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        conn.execute("INSERT INTO bench_insert (doc) VALUES (?)", (DOC_TEXT,))
        n += 1
    conn.close()
    return n / seconds


def harness_rate(config: str, agents: int, seconds: float, pg_url: str | None) -> float:
    plan = Plan(workloads=["single-insert"], configs=[CONFIGS[config]], agents=[agents],
                duration=seconds, warmup=0.5, repetitions=1, corpus=0, keep_samples=False)
    summary = execute_specs(plan, pg_url)
    return float(next(r["value"] for r in summary
                      if r["metric"] == "ops_per_s" and r["op"] == "all"))


def calibrate(results_dir: Path, *, seconds: float = 5.0, clients: int = 4,
              rounds: int = 2) -> dict[str, Any]:
    report: dict[str, Any] = {}
    fs = fsync_latency(results_dir)
    report["fdatasync p50 (ms)"] = fs["fdatasync_p50_s"] * 1000
    report["fdatasync ops/s"] = fs["fdatasync_ops_per_s"]
    folder = Path(tempfile.mkdtemp(prefix="storekit-cal-"))
    bare, ours = [], []
    for i in range(rounds):
        bare.append(bare_sqlite_rate(folder / f"bare{i}.db", seconds))
        ours.append(harness_rate("sqlite-wal", 1, seconds, None))
    report["sqlite-wal bare sqlite3 rows/s"] = statistics.median(bare)
    report["sqlite-wal harness rows/s (1 agent)"] = statistics.median(ours)
    report["sqlite harness/bare ratio"] = statistics.median(ours) / statistics.median(bare)
    bindir = find_pg_bin()
    if bindir is None or not (bindir / "pgbench").exists():
        report["pgbench"] = "not found; skipped"
        return report
    with postgres_server() as server:
        import storekit
        from bench.harness.workloads import single_insert

        with storekit.create_database(server.url) as db:
            single_insert.setup(db, {})  # pgbench's table, in the public schema
        pg, ours_pg = [], []
        for _ in range(rounds):
            pg.append(pgbench_tps(bindir, server.url, clients, seconds))
            ours_pg.append(harness_rate("postgres", clients, seconds, server.url))
    report[f"pgbench tps ({clients} clients)"] = statistics.median(pg)
    report[f"harness tps ({clients} agents)"] = statistics.median(ours_pg)
    report["postgres harness/pgbench ratio"] = statistics.median(ours_pg) / statistics.median(pg)
    return report
