"""agent-step: agents as asyncio tasks on storekit.aio, many per worker process. Each step
reads the agent's context (its row and its last few log lines), thinks (--think-ms, a
lognormal sleep; 0 = closed loop), then in one db.atomic() transaction writes a ~1 KB
result document and a log line and updates the agent's status and step counter from the
value it read, then notifies its team's channel. Storage time per step is the reads, the
transaction and the notify; verification checks every agent's counter against its
committed steps."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from bench.harness.agent import AgentContext, AgentResult, Operation, OpOutcome
from bench.harness.tasks import AsyncOperation
from bench.harness.workloads import Workload, doc_summary
from bench.harness.workloads.agent_write import documents
from storekit import Database
from storekit.aio import AsyncDatabase, AsyncTransaction
from storekit.schema import Column, Index, Table

AGENTS = Table("agents", [
    Column("id", "id"), Column("team", "integer", nullable=False), Column("status", "text"),
    Column("steps", "bigint", default=0), Column("config", "json"),
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
], indexes=[Index(["agent_id", "seq"])])
AGENT_ID_STRIDE = 1_000_000  # agent ids per run: run_key * stride + agent
TEAM_SIZE = 10
CONTEXT_MESSAGES = 5
READ_AGENT = "SELECT id, team, status, steps, config FROM agents WHERE id = ?"
READ_MESSAGES = ("SELECT seq, message FROM logs WHERE agent_id = ? ORDER BY seq DESC"
                 f" LIMIT {CONTEXT_MESSAGES}")
READ_STEPS = "SELECT steps FROM agents WHERE id = ?"
INSERT_RESULT = "INSERT INTO results (run_key, agent_id, seq, doc) VALUES (?, ?, ?, ?)"
INSERT_LOG = "INSERT INTO logs (run_key, agent_id, seq, message) VALUES (?, ?, ?, ?)"
UPDATE_AGENT = "UPDATE agents SET status = ?, steps = ? WHERE id = ?"


def roles(agents: int) -> list[str]:
    return ["writer"] * agents


def setup(db: Database, scale: dict[str, Any]) -> None:
    for table in (AGENTS, RESULTS, LOGS):
        db.create_table(table)


def agent_id(run_key: int, agent: int) -> int:
    return run_key * AGENT_ID_STRIDE + agent


def team_of(agent: int) -> int:
    return agent // TEAM_SIZE


def channel(ctx: AgentContext) -> str:
    return f"team_{ctx.run_key}_{team_of(ctx.agent)}"


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    db.run_many("INSERT INTO agents (id, team, status, config) VALUES (?, ?, 'idle', ?)",
                [(agent_id(run_key, i), team_of(i), {"model": "m", "temperature": 0.2})
                 for i in range(len(roles))])


def operation(db: Database, ctx: AgentContext) -> Operation:
    raise NotImplementedError("agent-step runs as asyncio tasks (bench/harness/tasks.py)")


def async_operation(db: AsyncDatabase, ctx: AgentContext) -> AsyncOperation:
    me = agent_id(ctx.run_key, ctx.agent)
    docs = documents(ctx.seed % 1000)
    rng = random.Random(ctx.seed)
    topic = channel(ctx)
    message = f"agent {ctx.agent} finished task {{}}"
    clock = time.perf_counter
    attempts = 0
    commit_started = 0.0

    async def step(tx: AsyncTransaction, seq: int, doc: dict[str, Any]) -> None:
        nonlocal attempts, commit_started
        attempts += 1
        row = await tx.get(READ_STEPS, (me,))
        if row is None:
            raise RuntimeError(f"agent row {me} is missing")
        await tx.run(INSERT_RESULT, (ctx.run_key, me, seq, doc))
        await tx.run(INSERT_LOG, (ctx.run_key, me, seq, message.format(seq)))
        await tx.run(UPDATE_AGENT, (f"done {seq}", row["steps"] + 1, me))
        commit_started = clock()

    async def op(seq: int) -> OpOutcome:
        nonlocal attempts
        if await db.get(READ_AGENT, (me,)) is None:
            raise RuntimeError(f"agent row {me} is missing")
        await db.all(READ_MESSAGES, (me,))
        doc = dict(rng.choice(docs), seq=seq)
        attempts = 0
        await db.atomic(step, seq, doc, retries=100)
        committed = clock()
        await db.notify(topic, {"sent": time.time(), "agent": ctx.agent, "seq": seq})
        return OpOutcome("step", commit=committed - commit_started, ack=(me, seq),
                         extra=attempts - 1)

    return op


def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
    acked = {ack for r in results for ack in r.acked}
    low, high = run_key * AGENT_ID_STRIDE, (run_key + 1) * AGENT_ID_STRIDE
    found_results = {(row["agent_id"], row["seq"]) for row in db.iter(
        "SELECT agent_id, seq FROM results WHERE run_key = ?", (run_key,))}
    found_logs = {(row["agent_id"], row["seq"]) for row in db.iter(
        "SELECT agent_id, seq FROM logs WHERE run_key = ?", (run_key,))}
    lost = (acked - found_results) | (acked - found_logs)
    steps = {row["id"]: row["steps"] for row in db.iter(
        "SELECT id, steps FROM agents WHERE id >= ? AND id < ?", (low, high))}
    # A committed step adds a result row and one to the counter it read (see agent-write:
    # rows, not acks, as a commit whose reply was lost is committed but not acked).
    committed = Counter(who for who, _ in found_results | acked)
    wrong = [a for a in steps if steps[a] != committed.get(a, 0)]
    detail = f"missing {sorted(lost)[:5]}" if lost else ""
    if wrong:
        detail += (" lost updates: agents whose step counter differs from their committed"
                   " steps: " + ", ".join(f"{a}: {steps[a]} vs {committed.get(a, 0)}"
                                          for a in wrong[:5]))
    return {"acked": len(acked), "lost": len(lost) + len(wrong), "detail": detail.strip()}


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    """retries: re-runs inside db.atomic() (a conflict or a busy lock that a retry
    absorbed); conflicts: steps that needed at least one retry."""
    per_step = [n for r in results for n in r.extras]
    return {"retries": float(sum(per_step)), "conflicts": float(sum(1 for n in per_step if n))}


WORKLOAD = Workload(
    name="agent-step", summary=doc_summary(__doc__), main_op="step", default=False,
    roles=roles, setup=setup, prepare=prepare, operation=operation, verify=verify,
    extra_metrics=extra_metrics, async_operation=async_operation, channel=channel,
)
