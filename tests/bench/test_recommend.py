"""Verdict and decision logic on hand-made summaries (no timing involved)."""

from __future__ import annotations

import pandas as pd

from bench.analysis import claims
from bench.analysis.claims import FAILS, HOLDS, HOLDS_IF


def frame(rows: list[tuple[str, str, int, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"workload": w, "config": c, "backend": "x", "agents": a, "rep": 0,
                          "op": op, "metric": m, "value": v} for w, c, a, op, m, v in rows])


def verdicts(rows: list[tuple[str, str, int, str, str, float]]) -> dict[str, str]:
    return {c.claim: c.verdict for c in claims.claims(frame(rows))}


def reads(rollback: float, wal: float, pg: float) -> list[tuple[str, str, int, str, str, float]]:
    return [("read-while-write", "sqlite-rollback", 4, "point_read", "latency_p99_ms", rollback),
            ("read-while-write", "sqlite-wal", 4, "point_read", "latency_p99_ms", wal),
            ("read-while-write", "postgres", 4, "point_read", "latency_p99_ms", pg)]


def test_writers_block_per_journal_mode() -> None:
    v = verdicts(reads(rollback=80.0, wal=0.05, pg=0.9))
    assert v["SQLite writers block everything (rollback journal)"] == HOLDS
    assert v["SQLite writers block everything (WAL)"] == FAILS
    v = verdicts(reads(rollback=0.5, wal=0.05, pg=0.9))
    assert v["SQLite writers block everything (rollback journal)"] == FAILS
    # Fast readers that get few reads through are blocked too.
    throughput = [("read-while-write", "sqlite-rollback", 4, "point_read", "ops_per_s", 3000.0),
                  ("read-while-write", "sqlite-wal", 4, "point_read", "ops_per_s", 60000.0)]
    v = verdicts(reads(rollback=0.5, wal=0.05, pg=0.9) + throughput)
    assert v["SQLite writers block everything (rollback journal)"] == HOLDS
    assert v["SQLite writers block everything (WAL)"] == FAILS


def test_search_claim_holds_only_with_rollback_journal() -> None:
    rows = [("search", "sqlite-wal", 4, "search", "latency_p99_ms", 5.0),
            ("search", "sqlite-rollback", 4, "search", "latency_p99_ms", 500.0),
            ("search", "postgres", 4, "search", "latency_p99_ms", 3.0)]
    assert verdicts(rows)[
        "FTS5 search suffers from the write lock; PostgreSQL searches freely"] == HOLDS_IF


def test_concurrency_claims() -> None:
    rows = [("agent-write", c, a, "all", "ops_per_s", v) for c, a, v in (
        ("postgres", 1, 800), ("postgres", 16, 5000), ("sqlite-wal-full", 1, 4000),
        ("sqlite-wal-full", 16, 3500), ("sqlite-wal", 1, 14000), ("sqlite-wal", 16, 11000),
        ("postgres-async-commit", 1, 1100))]
    rows += [("agent-write", "sqlite-wal", 16, "transaction", "lock_wait_share", 0.8),
             ("agent-write", "sqlite-wal", 16, "all", "errors_total", 0),
             ("agent-write", "sqlite-naive", 16, "all", "errors_total", 120)]
    v = verdicts(rows)
    assert v["PostgreSQL is better for concurrent workloads"] == HOLDS_IF
    assert v["SQLite allows one writer at a time"] == HOLDS
    assert v["SQLite's synchronous API is faster single-threaded"] == HOLDS
    assert v["SQLite does not work for teams of 2-50 users"] == HOLDS_IF
    assert v["Three concurrent agents make each other wait"] == HOLDS


def test_starved_readers_count_as_blocked_not_unmeasured() -> None:
    """A config whose readers completed no read in the window was blocked, not unmeasured."""
    import pandas as pd


    rows = []
    for config, reads, searches in (("sqlite-wal", 30_000.0, 2_000.0),
                                    ("sqlite-rollback", None, None),
                                    ("postgres", 2_000.0, 2_000.0)):
        for workload, op, done in (("read-while-write", "point_read", reads),
                                   ("search", "search", searches)):
            rows.append((workload, config, "all", "ops_per_s", 1_000.0))
            if done is not None:
                rows.append((workload, config, op, "ops_per_s", done))
                rows.append((workload, config, op, "latency_p99_ms", 1.0))
    summary = pd.DataFrame([{"workload": w, "config": c, "backend": c.split("-")[0],
                             "agents": 2, "rep": 0, "op": op, "metric": metric, "value": v}
                            for w, c, op, metric, v in rows])
    verdicts = {c.claim: (c.verdict, c.evidence) for c in claims.claims(summary)}
    assert verdicts["SQLite writers block everything (rollback journal)"][0] == HOLDS
    assert "none completed" in verdicts["SQLite writers block everything (rollback journal)"][1]
    assert verdicts["SQLite writers block everything (WAL)"][0] == FAILS
    fts = verdicts["FTS5 search suffers from the write lock; PostgreSQL searches freely"]
    assert fts[0] == HOLDS_IF
