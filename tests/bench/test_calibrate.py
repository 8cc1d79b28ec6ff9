"""bench calibrate runs every workload's write transaction three ways; each way must write
what the workload writes (counts, not timings), and the ceiling reaches the headline."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import storekit
from bench.harness.configs import CONFIGS
from bench.harness.workloads import WORKLOADS
from bench.investigations import calibrate
from bench.investigations.calibrate_tx import WRITE_TXS
from storekit.testing import find_pg_bin

TABLE = {"single-insert": "bench_insert", "agent-write": "results",
         "read-while-write": "agent_status", "search": "chat"}


def _rows(db: storekit.Database, workload: str) -> int:
    row = db.get(f"SELECT count(*) AS n FROM {TABLE[workload]}")
    assert row is not None
    return int(row["n"])


def test_every_default_workload_has_a_write_transaction() -> None:
    assert {w for w, m in WORKLOADS.items() if m.default} <= set(WRITE_TXS)


@pytest.mark.parametrize("workload", list(WRITE_TXS))
def test_the_bare_loop_runs_the_workloads_statements(tmp_path: Path, workload: str) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    with CONFIGS["sqlite-wal"].open(url) as db:
        WORKLOADS[workload].setup(db, {"corpus": 10})
        WORKLOADS[workload].prepare(db, 7, ["writer"] * 2)
        before = _rows(db, workload)
    conn = sqlite3.connect(tmp_path / "bare.db", isolation_level=None)
    for seq in range(3):
        for agent in range(2):
            WRITE_TXS[workload].bare(conn, 7, agent, seq)
    conn.close()
    with CONFIGS["sqlite-wal"].open(url) as db:
        after = _rows(db, workload)
        if workload == "agent-write":
            runs = db.all("SELECT runs FROM agents WHERE id >= 7000 ORDER BY id")
            assert [r["runs"] for r in runs] == [3, 3]
    # read-while-write updates its rows in place; the others add one row per transaction.
    assert after - before == (0 if workload == "read-while-write" else 6)


@pytest.mark.parametrize("workload", list(WRITE_TXS))
def test_the_pgbench_script_runs_the_workloads_statements(storekit_postgres_url: str,
                                                          workload: str) -> None:
    bindir = find_pg_bin()
    if bindir is None or not (bindir / "pgbench").exists():
        pytest.skip("pgbench is not installed")
    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url, prefix="cal") as url, \
            CONFIGS["postgres"].open(url) as db:
        WORKLOADS[workload].setup(db, {"corpus": 10})
        WORKLOADS[workload].prepare(db, 9, ["writer"] * 2)
        before = _rows(db, workload)
        tps = calibrate.pgbench_tps(bindir, url,
                                    WRITE_TXS[workload].pgbench(9), 2, 1.0)
        assert tps > 0
        added = _rows(db, workload) - before
        if workload == "read-while-write":
            versions = db.all("SELECT version FROM agent_status WHERE run_key = 9")
            assert all(v["version"] > 0 for v in versions)
        else:
            assert added > 0
        if workload == "agent-write":
            # Each transaction added one result and one to its agent's counter.
            runs = db.get("SELECT sum(runs) AS n FROM agents WHERE id >= 9000 AND id < 10000")
            assert runs is not None
            assert runs["n"] == added


def test_the_headline_shows_the_pgbench_ceiling(tmp_path: Path) -> None:
    from bench.analysis import headline

    (tmp_path / "extras").mkdir()
    rows = [{"workload": "agent-write", "backend": "postgres", "baseline": "pgbench",
             "agents": a, "baseline_tps": 1000.0 * a, "harness_tps": 900.0 * a, "ratio": 0.9}
            for a in (1, 4, 16)]
    (tmp_path / "extras" / "calibration-20260101T000000Z.json").write_text(
        json.dumps({"schema_version": 1, "ratios": rows}))
    assert calibrate.pgbench_ceiling(tmp_path)[("agent-write", 4)] == 4000.0
    # A newer SQLite-only calibration (calibrate --backend sqlite) keeps that ceiling.
    sqlite_rows = [{**r, "backend": "sqlite", "baseline": "bare sqlite3"} for r in rows]
    (tmp_path / "extras" / "calibration-20260102T000000Z.json").write_text(
        json.dumps({"schema_version": 1, "ratios": sqlite_rows}))
    assert calibrate.pgbench_ceiling(tmp_path)[("agent-write", 4)] == 4000.0
    spec = headline.METRIC_TABLES[0]
    assert spec.metric == "ops_per_s"
    assert headline.ceiling_rows(spec, [1, 2, 4], tmp_path) == [
        "| pgbench, same transaction (bench calibrate) | 1,000 | - | 4,000 |"]
    assert headline.ceiling_rows(headline.METRIC_TABLES[1], [1, 4], tmp_path) == []
    # A calibration elsewhere (a local one, when the run is the reference) is not used.
    assert headline.ceiling_rows(spec, [1, 2, 4], tmp_path / "reference") == []


def _loop_rows(workload: str, kind: str, conn: object) -> None:
    for seq in range(3):
        for agent in range(2):
            getattr(WRITE_TXS[workload], kind)(conn, 11, agent, seq)


def _check_written(db: storekit.Database, workload: str, before: int) -> None:
    after = _rows(db, workload)
    assert after - before == (0 if workload == "read-while-write" else 6)
    if workload == "agent-write":
        runs = db.all("SELECT runs FROM agents WHERE id >= 11000 AND id < 12000 ORDER BY id")
        assert [r["runs"] for r in runs] == [3, 3]
    if workload == "read-while-write":
        versions = db.all("SELECT version FROM agent_status WHERE run_key = 11 ORDER BY id")
        assert [v["version"] for v in versions] == [3, 3]


@pytest.mark.parametrize("config", ["sqlite-wal", calibrate.STOCK_CONFIG])
@pytest.mark.parametrize("workload", list(WRITE_TXS))
def test_the_storekit_loop_runs_the_workloads_statements(tmp_path: Path, workload: str,
                                                         config: str) -> None:
    with CONFIGS[config].open(f"sqlite:///{tmp_path / 'sk.db'}") as db:
        WORKLOADS[workload].setup(db, {"corpus": 10})
        WORKLOADS[workload].prepare(db, 11, ["writer"] * 2)
        before = _rows(db, workload)
        _loop_rows(workload, "storekit", db)
        _check_written(db, workload, before)


@pytest.mark.parametrize("kind", ["storekit", "psycopg"])
@pytest.mark.parametrize("workload", list(WRITE_TXS))
def test_the_postgres_loops_run_the_workloads_statements(storekit_postgres_url: str,
                                                         workload: str, kind: str) -> None:
    import psycopg

    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url, prefix="calloop") as url, \
            CONFIGS["postgres"].open(url) as db:
        WORKLOADS[workload].setup(db, {"corpus": 10})
        WORKLOADS[workload].prepare(db, 11, ["writer"] * 2)
        before = _rows(db, workload)
        if kind == "storekit":
            _loop_rows(workload, kind, db)
        else:
            with psycopg.connect(db.reveal_url().render(mask=False), autocommit=True) as conn:
                _loop_rows(workload, kind, conn)
        _check_written(db, workload, before)


def test_the_layer_ratios_multiply_to_the_harness_ratio() -> None:
    runs = {"baseline": [1000.0, 1200.0], "psycopg": [700.0, 800.0],
            "storekit": [600.0, 700.0], "harness": [550.0, 650.0]}
    row = calibrate._row("agent-write", "postgres", "pgbench", 4, runs)
    assert row["ratio"] == pytest.approx(600 / 1100)
    assert row["driver_ratio"] * row["storekit_ratio"] * row["harness_ratio"] == \
        pytest.approx(row["ratio"])
    assert row["fair_ratio"] is None
    sqlite_runs = {k: v for k, v in runs.items() if k != "psycopg"}
    sqlite_runs["stock"] = [800.0, 900.0]
    row = calibrate._row("agent-write", "sqlite", "bare sqlite3", 4, sqlite_runs)
    assert row["driver_ratio"] is None
    assert row["driver_tps"] is None
    assert row["storekit_ratio"] * row["harness_ratio"] == pytest.approx(row["ratio"])
    assert row["stock_ratio"] == pytest.approx(850 / 1100)
    assert row["stock_ratio"] * row["fair_ratio"] == pytest.approx(row["storekit_ratio"])
