"""agent-write: each transaction reads the agent's row, inserts a ~1 KB result document and
a log line, and updates the agent's status and its step counter from the value it read. A
read-then-write transaction, the case that fails under deferred BEGIN and loses updates
at READ COMMITTED. It runs through db.atomic(), so a conflict is retried; verification
checks every agent's counter against its acknowledged steps."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from bench.harness.agent import AgentContext, AgentResult, Operation, OpOutcome
from bench.harness.corpus import Corpus
from bench.harness.workloads import Workload, doc_summary
from storekit import Database, Transaction
from storekit.schema import Column, Index, Table

AGENTS = Table("agents", [
    Column("id", "id"), Column("name", "text"), Column("status", "text"),
    Column("runs", "bigint", default=0), Column("config", "json"),
])
RESULTS = Table("results", [
    Column("id", "id"), Column("run_key", "integer", nullable=False),
    Column("agent_id", "integer", nullable=False), Column("seq", "integer", nullable=False),
    Column("doc", "json"), Column("created_at", "timestamp", default="now"),
], indexes=[Index(["run_key", "agent_id"])])
LOGS = Table("logs", [
    Column("id", "id"), Column("run_key", "integer", nullable=False),
    Column("agent_id", "integer", nullable=False), Column("seq", "integer", nullable=False),
    Column("message", "text"),
])
AGENT_ID_STRIDE = 1000
# One transaction's statements, shared with bench.investigations.handoff so both time the same work.
READ_AGENT = "SELECT id, status, runs FROM agents WHERE id = ?"
INSERT_RESULT = "INSERT INTO results (run_key, agent_id, seq, doc) VALUES (?, ?, ?, ?)"
INSERT_LOG = "INSERT INTO logs (run_key, agent_id, seq, message) VALUES (?, ?, ?, ?)"
UPDATE_AGENT = "UPDATE agents SET status = ?, runs = ? WHERE id = ?"


def roles(agents: int) -> list[str]:
    return ["writer"] * agents


def setup(db: Database, scale: dict[str, Any]) -> None:
    for table in (AGENTS, RESULTS, LOGS):
        db.create_table(table)


def agent_id(run_key: int, agent: int) -> int:
    return run_key * AGENT_ID_STRIDE + agent


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    db.run_many("INSERT INTO agents (id, name, status, config) VALUES (?, ?, 'idle', ?)",
                [(agent_id(run_key, i), f"agent-{i}", {"model": "m", "temperature": 0.2})
                 for i in range(len(roles))])


def documents(seed: int) -> list[dict[str, Any]]:
    corpus = Corpus(seed=seed)
    docs = []
    for i in range(16):
        text = ""
        while len(text) < 900:
            text += corpus.message() + ". "
        docs.append({"summary": text[:900], "scores": [i, i * 2, i * 3], "ok": True})
    return docs


def operation(db: Database, ctx: AgentContext) -> Operation:
    me = agent_id(ctx.run_key, ctx.agent)
    docs = documents(ctx.seed)
    rng = random.Random(ctx.seed)
    clock = time.perf_counter

    message = f"agent {ctx.agent} finished task {{}}"
    attempts = 0
    times: list[float] = []

    def step(tx: Transaction, seq: int, doc: dict[str, Any]) -> None:
        nonlocal attempts
        attempts += 1
        t1 = clock()
        row = tx.get(READ_AGENT, (me,))
        if row is None:
            raise RuntimeError(f"agent row {me} is missing")
        t2 = clock()
        # Nothing reads the writes' results: on PostgreSQL they go with COMMIT, one round
        # trip for the three (on SQLite they run here).
        tx.run_deferred(INSERT_RESULT, (ctx.run_key, me, seq, doc))
        t3 = clock()
        tx.run_deferred(INSERT_LOG, (ctx.run_key, me, seq, message.format(seq)))
        tx.run_deferred(UPDATE_AGENT, (f"done {seq}", row["runs"] + 1, me))
        times[:] = (t1, t2, t3, clock())

    def op(seq: int) -> OpOutcome:
        nonlocal attempts
        doc = dict(rng.choice(docs), seq=seq)
        attempts = 0
        t0 = clock()
        db.atomic(step, seq, doc)
        t5 = clock()
        t1, t2, t3, t4 = times
        # Lock wait: BEGIN IMMEDIATE waits for the write lock; under a deferred BEGIN the
        # first write does. Commit time is the WAL flush on both backends; on PostgreSQL
        # it also covers the writes sent with COMMIT (and any row lock they wait for).
        # The last attempt's figures; earlier attempts count as retries.
        return OpOutcome("transaction", lock_wait=(t1 - t0) + (t3 - t2), commit=t5 - t4,
                         ack=(me, seq), extra=attempts - 1)

    return op


def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
    acked = {ack for r in results for ack in r.acked}
    found_results = {(row["agent_id"], row["seq"]) for row in db.iter(
        "SELECT agent_id, seq FROM results WHERE run_key = ?", (run_key,))}
    found_logs = {(row["agent_id"], row["seq"]) for row in db.iter(
        "SELECT agent_id, seq FROM logs WHERE run_key = ?", (run_key,))}
    lost = (acked - found_results) | (acked - found_logs)
    runs = {row["id"]: row["runs"] for row in db.all(
        "SELECT id, runs FROM agents WHERE id >= ? AND id < ?",
        (run_key * AGENT_ID_STRIDE, (run_key + 1) * AGENT_ID_STRIDE))}
    # Each committed step adds a result row and one to the agent's counter, from the value
    # it read: a lost update leaves the counter short of the rows. (Rows, not acks: a
    # commit whose reply was lost, as in a server restart, is in both but was not acked;
    # a missing acked row is counted above, once. A counter ahead means rows vanished.)
    steps = Counter(who for who, _ in found_results | acked)
    wrong = [a for a in runs if runs[a] != steps.get(a, 0)]
    detail = f"missing {sorted(lost)[:5]}" if lost else ""
    if wrong:
        detail += (" lost updates: agents whose step counter differs from their committed steps: "
                   + ", ".join(f"{a}: {runs[a]} vs {steps.get(a, 0)}" for a in wrong[:5]))
    return {"acked": len(acked), "lost": len(lost) + len(wrong), "detail": detail.strip()}


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    """Re-runs inside db.atomic() (conflicts that a retry absorbed), in the measurement."""
    return {"retries": float(sum(n for r in results for n in r.extras))}


WORKLOAD = Workload(
    name="agent-write", summary=doc_summary(__doc__), main_op="transaction",
    notebooks=("00-recommendation", "01-agent-write"),
    roles=roles, setup=setup, prepare=prepare, operation=operation, verify=verify,
    extra_metrics=extra_metrics,
)
