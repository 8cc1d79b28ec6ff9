"""langgraph-postgres: the langgraph workload's graph on langgraph-checkpoint-postgres's
AsyncPostgresSaver (psycopg), one connection per agent as from_conn_string opens it, on
the postgres config's server."""

from __future__ import annotations

from bench.harness.workloads.langgraph import workload_for

WORKLOAD = workload_for("langgraph-postgres", __doc__)
