"""The tables and SQL of storekit.langgraph's saver; the same text runs on both backends
except the metadata filter (the dialect's json_key_equals)."""

from __future__ import annotations

from storekit.schema import Column, Index, Table

CHECKPOINTS = Table("langgraph_checkpoints", [
    Column("thread_id", "text", nullable=False),
    Column("checkpoint_ns", "text", nullable=False, default=""),
    Column("checkpoint_id", "text", nullable=False),
    Column("parent_checkpoint_id", "text"),
    Column("run_id", "text"),  # metadata's run_id, for delete_for_runs
    Column("type", "text"),  # the serde's type tag of `checkpoint`
    Column("checkpoint", "blob", nullable=False),
    Column("metadata", "json", nullable=False),
], indexes=[
    # The key; its prefix serves the lookups by thread and by namespace.
    Index(("thread_id", "checkpoint_ns", "checkpoint_id"), unique=True,
          name="langgraph_checkpoints_key"),
    Index(("run_id",), name="langgraph_checkpoints_run_id"),
])

WRITES = Table("langgraph_writes", [
    Column("thread_id", "text", nullable=False),
    Column("checkpoint_ns", "text", nullable=False, default=""),
    Column("checkpoint_id", "text", nullable=False),
    Column("task_id", "text", nullable=False),
    Column("task_path", "text", nullable=False, default=""),
    Column("idx", "integer", nullable=False),
    Column("channel", "text", nullable=False),
    Column("type", "text"),
    Column("value", "blob"),
], indexes=[
    Index(("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"), unique=True,
          name="langgraph_writes_key"),
])

PUT = (
    "INSERT INTO langgraph_checkpoints (thread_id, checkpoint_ns, checkpoint_id,"
    " parent_checkpoint_id, run_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET"
    " run_id = excluded.run_id, type = excluded.type, checkpoint = excluded.checkpoint,"
    " metadata = excluded.metadata"
)
_INSERT_WRITES = (
    "INSERT INTO langgraph_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
    " task_path, idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO "
)
WRITES_UPSERT = _INSERT_WRITES + (
    "UPDATE SET channel = excluded.channel, type = excluded.type, value = excluded.value")
WRITES_IGNORE = _INSERT_WRITES + "NOTHING"

DELETE_THREAD = (
    "DELETE FROM langgraph_writes WHERE thread_id = ?",
    "DELETE FROM langgraph_checkpoints WHERE thread_id = ?",
)
DELETE_NAMESPACE = (
    "DELETE FROM langgraph_writes WHERE thread_id = ? AND checkpoint_ns = ?",
    "DELETE FROM langgraph_checkpoints WHERE thread_id = ? AND checkpoint_ns = ?",
)
# {marks}: one ? per run id. The writes go first, while their checkpoints still name them.
DELETE_RUNS_WRITES = (
    "DELETE FROM langgraph_writes WHERE (thread_id, checkpoint_ns, checkpoint_id) IN"
    " (SELECT thread_id, checkpoint_ns, checkpoint_id FROM langgraph_checkpoints"
    " WHERE run_id IN ({marks}))"
)
DELETE_RUNS_CHECKPOINTS = "DELETE FROM langgraph_checkpoints WHERE run_id IN ({marks})"
# Parameters: (target thread, source thread). WHERE comes before ON CONFLICT, which SQLite
# needs to parse an upsert after a SELECT.
COPY_CHECKPOINTS = (
    "INSERT INTO langgraph_checkpoints (thread_id, checkpoint_ns, checkpoint_id,"
    " parent_checkpoint_id, run_id, type, checkpoint, metadata)"
    " SELECT ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, type, checkpoint,"
    " metadata FROM langgraph_checkpoints WHERE thread_id = ? ON CONFLICT DO NOTHING"
)
COPY_WRITES = (
    "INSERT INTO langgraph_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
    " task_path, idx, channel, type, value)"
    " SELECT ?, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value"
    " FROM langgraph_writes WHERE thread_id = ? ON CONFLICT DO NOTHING"
)


def select_sql(where: list[str], *, limited: bool) -> str:
    """Checkpoints (kind 0) matching `where`, newest first, then the pending writes
    (kind 1) of those checkpoints: one statement, so both come from one snapshot."""
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    limit = " LIMIT ?" if limited else ""
    return (
        "WITH c AS (SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
        f" type, checkpoint, metadata FROM langgraph_checkpoints{cond}"
        f" ORDER BY checkpoint_id DESC{limit})"
        " SELECT 0 AS kind, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
        " type, checkpoint AS data, metadata, NULL AS task_id, NULL AS task_path,"
        " NULL AS idx, NULL AS channel FROM c"
        " UNION ALL"
        " SELECT 1, w.thread_id, w.checkpoint_ns, w.checkpoint_id, NULL, w.type, w.value,"
        " NULL, w.task_id, w.task_path, w.idx, w.channel FROM langgraph_writes w JOIN c"
        " ON w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns"
        " AND w.checkpoint_id = c.checkpoint_id"
        " ORDER BY checkpoint_id DESC, kind"
    )
