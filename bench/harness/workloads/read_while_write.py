"""read-while-write: writers update agent configs and status; readers poll status with
point reads and a small range read. Staleness: from a writer's acknowledged commit of a
version to a reader's read that still returned an older one."""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import defaultdict
from typing import Any

from bench.harness.agent import AgentContext, AgentResult, Operation, OpOutcome
from bench.harness.metrics import latency_summary
from bench.harness.workloads import Workload, doc_summary
from storekit import Database
from storekit.schema import Column, Table

STATUS = Table("agent_status", [
    Column("id", "id"), Column("run_key", "integer"), Column("status", "text"),
    Column("version", "bigint", default=0), Column("config", "json"),
    Column("updated_at", "real"),
])
STRIDE = 1000


def roles(agents: int) -> list[str]:
    writers = max(1, math.ceil(agents / 2))
    return ["writer"] * writers + ["reader"] * max(1, agents - writers)


def setup(db: Database, scale: dict[str, Any]) -> None:
    db.create_table(STATUS)


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    rows = [(run_key * STRIDE + i, run_key, "idle", {"model": "m", "v": 0}, time.time())
            for i in range(roles.count("writer"))]
    db.run_many("INSERT INTO agent_status (id, run_key, status, config, updated_at)"
                " VALUES (?, ?, ?, ?, ?)", rows)


def operation(db: Database, ctx: AgentContext) -> Operation:
    writers = ctx.params["writers"]
    base = ctx.run_key * STRIDE
    rng = random.Random(ctx.seed)
    clock = time.perf_counter
    if ctx.role == "writer":
        me = base + ctx.agent

        def write(seq: int) -> OpOutcome:
            t0 = clock()
            with db.transaction() as tx:
                t1 = clock()
                tx.get("SELECT version FROM agent_status WHERE id = ?", (me,))
                result = tx.run(
                    "UPDATE agent_status SET status = ?, config = ?, version = version + 1,"
                    " updated_at = ? WHERE id = ? RETURNING version",
                    (f"step {seq}", {"model": "m", "v": seq, "pad": "x" * 200}, time.time(), me),
                )
                t2 = clock()
            t3 = clock()
            # The version is acknowledged at the wall-clock time the commit returned.
            return OpOutcome("update", lock_wait=t1 - t0, commit=t3 - t2,
                             ack=(me, result.last_id, time.time()))

        return write

    def read(seq: int) -> OpOutcome:
        target = base + rng.randrange(writers)
        if seq % 2 == 0:
            started = time.time()
            row = db.get("SELECT id, status, version FROM agent_status WHERE id = ?", (target,))
            return OpOutcome("point_read", extra=(target, row["version"] if row else -1, started))
        low = base + rng.randrange(max(1, writers - 9))
        db.all("SELECT id, status, version FROM agent_status WHERE id BETWEEN ? AND ?",
               (low, low + 9))
        return OpOutcome("range_read")

    return read


def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
    acked: dict[int, int] = defaultdict(int)
    for r in results:
        for agent, version, _ in r.acked:
            acked[agent] = max(acked[agent], version)
    rows = {row["id"]: row["version"] for row in db.all(
        "SELECT id, version FROM agent_status WHERE run_key = ?", (run_key,))}
    lost = {a: (v, rows.get(a)) for a, v in acked.items() if rows.get(a, -1) < v}
    count = sum(len(r.acked) for r in results)
    return {"acked": count, "lost": len(lost),
            "detail": f"versions behind: {dict(list(lost.items())[:5])}" if lost else ""}


def staleness(results: list[AgentResult]) -> list[float]:
    """Per point read: how long a newer version had already been acknowledged (0 if none)."""
    commits: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in results:
        for agent, version, at in r.acked:
            commits[agent].append((version, at))
    for agent in commits:
        commits[agent].sort()
    out: list[float] = []
    for r in results:
        for target, seen, started in r.extras:
            history = commits.get(target, [])
            i = bisect.bisect_right(history, (seen, math.inf))  # first version newer than seen
            if i < len(history) and history[i][1] < started:
                out.append(started - history[i][1])
            else:
                out.append(0.0)
    return out


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    values = staleness(results)
    if not values:
        return {}
    s = latency_summary(values)
    return {"staleness_p50": s["p50"], "staleness_p99": s["p99"], "staleness_max": s["max"],
            "stale_read_share": sum(1 for v in values if v > 0) / len(values)}


WORKLOAD = Workload(
    name="read-while-write", summary=doc_summary(__doc__), main_op="update",
    notebooks=("02-read-while-write",),
    roles=roles, setup=setup, prepare=prepare, operation=operation, verify=verify,
    extra_metrics=extra_metrics,
)
