"""single-insert: one ~500-byte JSON row INSERT per transaction, the statement `bench
calibrate` also gives pgbench and a bare sqlite3 loop, to check the harness is not the
bottleneck."""

from __future__ import annotations

import json
from typing import Any

from bench.agent import AgentContext, AgentResult, Operation, OpOutcome
from storekit import Database

DOC = {"agent": 1, "status": "running", "note": "x" * 440}
DOC_TEXT = json.dumps(DOC)
INSERT = "INSERT INTO bench_insert (doc) VALUES (?)"


def roles(agents: int) -> list[str]:
    return ["writer"] * agents


def setup(db: Database, scale: dict[str, Any]) -> None:
    if db.backend == "sqlite":
        db.exec("CREATE TABLE IF NOT EXISTS bench_insert (id INTEGER PRIMARY KEY, doc TEXT)")
    else:
        db.exec("CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, doc jsonb)")


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    return None


def operation(db: Database, ctx: AgentContext) -> Operation:
    def insert(seq: int) -> OpOutcome:
        db.run(INSERT, (DOC_TEXT,))
        return OpOutcome("insert")

    return insert


def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
    return {"acked": 0, "lost": 0, "detail": "calibration only"}


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    return {}
