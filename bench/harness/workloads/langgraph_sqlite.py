"""langgraph-sqlite: the langgraph workload's graph on langgraph-checkpoint-sqlite's
AsyncSqliteSaver (aiosqlite), one connection per agent as from_conn_string opens it, on
the sqlite-wal config's file (its setup turns WAL on)."""

from __future__ import annotations

from bench.harness.workloads.langgraph import workload_for

WORKLOAD = workload_for("langgraph-sqlite", __doc__)
