"""single-insert: one ~500-byte JSON row INSERT per transaction, the statement `bench
calibrate` also gives pgbench and a bare sqlite3 loop, to check the harness is not the
bottleneck."""

from __future__ import annotations

import json
from typing import Any

from bench.harness.agent import AgentContext, AgentResult, Operation, OpOutcome
from bench.harness.workloads import Workload, doc_summary
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
    db.exec("CREATE TABLE IF NOT EXISTS bench_insert_runs (run_key INTEGER PRIMARY KEY,"
            " rows_before BIGINT)")


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    # The statement must stay the one pgbench runs, so rows carry no run key: verification
    # compares the row count with the count before the run instead.
    db.run("INSERT INTO bench_insert_runs (run_key, rows_before)"
           " SELECT ?, COUNT(*) FROM bench_insert", (run_key,))


def operation(db: Database, ctx: AgentContext) -> Operation:
    def insert(seq: int) -> OpOutcome:
        db.run(INSERT, (DOC_TEXT,))
        return OpOutcome("insert", ack=seq)

    return insert


def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
    acked = sum(len(r.acked) for r in results)
    row = db.get("SELECT (SELECT COUNT(*) FROM bench_insert) - rows_before AS added"
                 " FROM bench_insert_runs WHERE run_key = ?", (run_key,))
    added = int(row["added"]) if row else 0
    lost = max(0, acked - added)
    return {"acked": acked, "lost": lost,
            "detail": f"{added} rows added for {acked} acknowledged" if lost else ""}


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    return {}


WORKLOAD = Workload(
    name="single-insert", summary=doc_summary(__doc__), main_op="insert",
    notebooks=(),
    roles=roles, setup=setup, prepare=prepare, operation=operation, verify=verify,
    extra_metrics=extra_metrics,
    default=False,  # calibration against pgbench and bare sqlite3: not in `all`
)
