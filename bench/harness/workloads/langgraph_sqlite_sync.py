"""langgraph-sqlite-sync: the langgraph workload's graph, run with graph.invoke, on
langgraph-checkpoint-sqlite's SqliteSaver (sqlite3), one connection per agent as
from_conn_string opens it, on the sqlite-wal config's file."""

from __future__ import annotations

from bench.harness.workloads.langgraph import workload_for

WORKLOAD = workload_for("langgraph-sqlite-sync", __doc__)
